#!/usr/bin/env python3
"""PyTorch timing of the shapes in benches/encoders.rs, for a ratio against the burn backbone.

ViT-B/16 (open_clip `ViT-B-16-quickgelu`, random weights, frozen), 8 images at 224 px and 100 prompts
of 77 tokens: forward, and forward + backward through prompt tokens (4 CoOp context vectors in the
text, 8 shallow VPT tokens appended to the image sequence before ln_pre, as the Rust benchmark does).

    /tmp/pyref/bin/python benches/pytorch_encoders.py [--threads N] [--device cpu|cuda] [--reps K] [--case C]

Prints one JSON line per case: median and min seconds over K timed runs after one warm-up.
"""
import argparse
import json
import statistics
import time

import open_clip
import torch

IMAGES, PROMPTS, N_CTX, N_VPT = 8, 100, 4, 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--case", action="append", help="run only these cases (repeatable), e.g. image_forward/8")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    pixels = torch.randn(IMAGES, 3, 224, 224, device=dev)
    ids = torch.zeros(PROMPTS, 77, dtype=torch.long)
    eos = []
    for p in range(PROMPTS):
        name_len = 1 + p % 4
        ids[p, 0] = 49406
        for i in range(1, 1 + N_CTX + name_len + 1):
            ids[p, i] = 1000 + (p * 31 + i * 7) % 40000
        e = 1 + N_CTX + name_len + 1
        ids[p, e] = 49407
        eos.append(e)
    ids = ids.to(dev)
    eos = torch.tensor(eos, device=dev)
    v = model.visual

    def image(vpt=None):
        x = v.conv1(pixels).flatten(2).transpose(1, 2)
        cls = v.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + v.positional_embedding
        if vpt is not None:
            x = torch.cat([x, vpt.expand(x.shape[0], -1, -1)], 1)
        x = v.ln_pre(x)
        x = v.transformer(x)
        return v.ln_post(x[:, 0]) @ v.proj

    def text(ctx=None):
        x = model.token_embedding(ids)
        if ctx is not None:
            x = torch.cat([x[:, :1], ctx.expand(PROMPTS, -1, -1), x[:, 1 + N_CTX :]], 1)
        x = x + model.positional_embedding
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        return x[torch.arange(PROMPTS, device=dev), eos] @ model.text_projection

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def fwd_image():
        with torch.no_grad():
            image().sum().item()

    def fwd_text():
        with torch.no_grad():
            text().sum().item()

    def bwd_image():
        vpt = (0.02 * torch.randn(1, N_VPT, 768, device=dev)).requires_grad_()
        image(vpt).pow(2).mean().backward()
        vpt.grad.sum().item()

    def bwd_text():
        ctx = (0.02 * torch.randn(1, N_CTX, 512, device=dev)).requires_grad_()
        text(ctx).pow(2).mean().backward()
        ctx.grad.sum().item()

    for name, fn in [
        ("image_forward/8", fwd_image),
        ("text_forward/100", fwd_text),
        ("image_forward_backward_vpt/8", bwd_image),
        ("text_forward_backward_ctx/100", bwd_text),
    ]:
        if a.case and name not in a.case:
            continue
        fn()
        sync()
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        print(json.dumps({"case": name, "device": a.device, "threads": a.threads, "torch": torch.__version__,
                          "median_s": statistics.median(times), "min_s": min(times), "reps": a.reps}), flush=True)


if __name__ == "__main__":
    main()
