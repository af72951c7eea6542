#!/usr/bin/env python3
"""CoOp prompt assembly reference: tests/fixtures/coop_prompts.safetensors (+ .json).

Re-implements KaiyangZhou/CoOp's `PromptLearner` (trainers/coop.py) on the tiny HF fixture model:
the tokenized string "X X X X {classname}.", SOS prefix, learnable context, class-token suffix, for
class_token_position end / middle / front and unified or class-specific context; the text encoder
runs on the assembled embeddings and pools at argmax(token ids), as CoOp's TextEncoder does. Run once:

    /tmp/pyref/bin/python tests/reference/coop_prompts.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import CLIPModel, CLIPTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
MODEL = os.path.join(FIX, "tiny-clip-hf")

torch.manual_seed(0)
model = CLIPModel.from_pretrained(MODEL).eval()
tok = CLIPTokenizerFast.from_pretrained(MODEL)
# Multi-token names, an underscore (CoOp reads "_" as a space), a one-letter name.
classnames = ["dog", "sea_lion", "great pyrenees", "a", "aircraft carrier"]
n_ctx = 4
ctx_dim = model.text_model.config.hidden_size
ctx_generic = torch.randn(1, n_ctx, ctx_dim) * 0.02
ctx_csc = torch.randn(len(classnames), n_ctx, ctx_dim) * 0.02

names = [n.replace("_", " ") for n in classnames]
name_lens = [len(tok(n, add_special_tokens=False)["input_ids"]) for n in names]
prompt_prefix = " ".join(["X"] * n_ctx)
prompts = [prompt_prefix + " " + n + "." for n in names]
# clip.tokenize: SOT, tokens, EOT, then zeros up to 77.
ids = torch.tensor([row + [0] * (77 - len(row)) for row in tok(prompts)["input_ids"]])
emb = model.text_model.embeddings.token_embedding(ids).detach()
prefix, suffix = emb[:, :1, :], emb[:, 1 + n_ctx:, :]


def assemble(ctx, position):
    n = len(classnames)
    if ctx.dim() == 3 and ctx.shape[0] == 1:
        ctx = ctx.expand(n, -1, -1)
    if position == "end":
        return torch.cat([prefix, ctx, suffix], dim=1)
    half = n_ctx // 2
    out = []
    for i in range(n):
        k = name_lens[i]
        p, c, cls, s = prefix[i:i + 1], ctx[i:i + 1], suffix[i:i + 1, :k], suffix[i:i + 1, k:]
        if position == "middle":
            out.append(torch.cat([p, c[:, :half], cls, c[:, half:], s], dim=1))
        else:
            out.append(torch.cat([p, cls, c, s], dim=1))
    return torch.cat(out, dim=0)


class Fixed(torch.nn.Module):
    """Stands in for the token embedding so the encoder sees the assembled prompts."""

    def __init__(self, x):
        super().__init__()
        self.x = x

    def forward(self, _ids):
        return self.x


real = model.text_model.embeddings.token_embedding
tensors = {"ctx_generic": ctx_generic.contiguous(), "ctx_csc": ctx_csc.contiguous()}
for name, ctx, position in [
    ("end", ctx_generic, "end"),
    ("middle", ctx_generic, "middle"),
    ("front", ctx_generic, "front"),
    ("csc_end", ctx_csc, "end"),
    ("csc_middle", ctx_csc, "middle"),
]:
    x = assemble(ctx, position)
    model.text_model.embeddings.token_embedding = Fixed(x)
    with torch.no_grad():
        # HF pools at the first eos_token_id, which is where argmax(ids) is (EOT has the top id).
        eot = model.config.text_config.eos_token_id
        assert (ids.argmax(-1) == (ids == eot).int().argmax(-1)).all() and (ids == eot).sum() == len(ids)
        out = model.text_model(input_ids=ids)
        feats = model.text_projection(out.pooler_output)
    model.text_model.embeddings.token_embedding = real
    tensors[f"embeds_{name}"] = x.contiguous()
    tensors[f"features_{name}"] = (feats / feats.norm(dim=-1, keepdim=True)).contiguous()

save_file(tensors, os.path.join(FIX, "coop_prompts.safetensors"))
with open(os.path.join(FIX, "coop_prompts.json"), "w") as f:
    json.dump({"classnames": classnames, "n_ctx": n_ctx, "name_lens": name_lens, "prompts": prompts,
               "eos": ids.argmax(-1).tolist()}, f, indent=1)
print("wrote coop_prompts.safetensors", {k: tuple(v.shape) for k, v in tensors.items()}, name_lens)
