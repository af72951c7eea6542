#!/usr/bin/env python3
"""Build the parity fixtures under tests/fixtures/ from the reference implementations.

Run once (CI never runs it; torch is a multi-GB install):

    python3 -m venv /tmp/pyref
    /tmp/pyref/bin/pip install torch transformers open_clip_torch safetensors pillow matplotlib
    /tmp/pyref/bin/python tests/reference/make_fixtures.py

Recorded with torch 2.15.0, transformers 5.24.0, open_clip 3.3.0, Pillow (see fixtures/versions.json).

What it writes:
- tiny-clip-hf/: a tiny random HF CLIP (config.json, model.safetensors, tokenizer.json). Layer norms,
  biases and logit_scale are randomised so a tensor dropped or left at its init value is caught.
- tiny-clip-openai.safetensors (+ tiny-clip-openai.json, an open_clip model config): the same weights
  in the OpenAI/open_clip state-dict layout, checked here by running open_clip on it.
- reference.safetensors: hidden states, pooled outputs, embeds and logits for fixed pixels and ids,
  for the f32 model, the legacy eos_token_id=2 pooling rule, and the model rounded to f16 and bf16.
- tokens.json: ids of real strings under the full OpenAI vocabulary (HF tokenizer built from
  bpe_simple_vocab_16e6.txt.gz, and open_clip's tokenizer), and under the tiny fixture tokenizer.
- images/ + preprocess.safetensors: real JPEG/PNG files (RGB, grayscale, RGBA, palette) and the
  uint8 result of open_clip's eval transform (resize shortest side bicubic, centre crop) on each.
"""
import gzip
import json
import os
import shutil

import numpy as np
import open_clip
import PIL
import torch
import transformers
from open_clip.tokenizer import bytes_to_unicode
from PIL import Image
from safetensors.torch import save_file, load_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures")
torch.manual_seed(20231001)
np.random.seed(20231001)

WIDTH, HEADS, LAYERS, MLP, EMBED, IMG, PATCH, VOCAB = 64, 4, 2, 256, 32, 32, 8, 1000
SOT, EOT = VOCAB - 2, VOCAB - 1


def bpe_lines():
    return gzip.open(open_clip.tokenizer.default_bpe()).read().decode("utf-8").split("\n")


def hf_tokenizer(n_merges, workdir):
    """CLIP tokenizer with the first n_merges merges: OpenAI's derivation, cut shorter for the tiny model."""
    lines = bpe_lines()
    merges = lines[1 : n_merges + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(workdir, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    from transformers import CLIPTokenizer

    CLIPTokenizer(os.path.join(workdir, "vocab.json"), os.path.join(workdir, "merges.txt")).save_pretrained(
        os.path.join(workdir, "saved")
    )
    tok = CLIPTokenizerFast.from_pretrained(os.path.join(workdir, "saved"))
    assert len(tok) == len(vocab), (len(tok), len(vocab))
    return tok


def randomize(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(2.3)  # not the 2.6592 init value
            elif "norm" in name or "layrnorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif "embedding" in name:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / (p.shape[-1] ** 0.5 if p.dim() > 1 else 10.0))


def hf_to_openai(sd):
    """HF CLIP keys -> OpenAI/open_clip keys (the mapping documented in docs/clip-layouts.md)."""
    out = {}
    for tower, hf, oa in (("text", "text_model", ""), ("vision", "vision_model", "visual.")):
        for n in range(LAYERS):
            h = f"{hf}.encoder.layers.{n}."
            o = f"{oa}transformer.resblocks.{n}."
            out[o + "attn.in_proj_weight"] = torch.cat([sd[h + f"self_attn.{x}_proj.weight"] for x in "qkv"], 0)
            out[o + "attn.in_proj_bias"] = torch.cat([sd[h + f"self_attn.{x}_proj.bias"] for x in "qkv"], 0)
            out[o + "attn.out_proj.weight"] = sd[h + "self_attn.out_proj.weight"]
            out[o + "attn.out_proj.bias"] = sd[h + "self_attn.out_proj.bias"]
            for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[o + a + ".weight"] = sd[h + b + ".weight"]
                out[o + a + ".bias"] = sd[h + b + ".bias"]
    out["token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    out["ln_final.weight"] = sd["text_model.final_layer_norm.weight"]
    out["ln_final.bias"] = sd["text_model.final_layer_norm.bias"]
    out["text_projection"] = sd["text_projection.weight"].t()
    out["visual.class_embedding"] = sd["vision_model.embeddings.class_embedding"]
    out["visual.positional_embedding"] = sd["vision_model.embeddings.position_embedding.weight"]
    out["visual.conv1.weight"] = sd["vision_model.embeddings.patch_embedding.weight"]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"visual.{a}.weight"] = sd[f"vision_model.{b}.weight"]
        out[f"visual.{a}.bias"] = sd[f"vision_model.{b}.bias"]
    out["visual.proj"] = sd["visual_projection.weight"].t()
    out["logit_scale"] = sd["logit_scale"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def model_outputs(model, pixels, ids, prefix):
    """Towers run alone for hidden states and pooled outputs (transformers 5 overwrites pooler_output
    with the projection inside CLIPModel.forward); the full model for embeds (L2-normalized) and logits."""
    with torch.no_grad():
        t = model.text_model(input_ids=ids, output_hidden_states=True)
        v = model.vision_model(pixel_values=pixels, output_hidden_states=True)
        o = model(input_ids=ids, pixel_values=pixels)
    rec = {
        f"{prefix}text_pooled": t.pooler_output,
        f"{prefix}text_embeds": o.text_embeds,
        f"{prefix}image_pooled": v.pooler_output,
        f"{prefix}image_embeds": o.image_embeds,
        f"{prefix}logits_per_image": o.logits_per_image,
        f"{prefix}text_last_hidden": t.last_hidden_state,
        f"{prefix}vision_last_hidden": v.last_hidden_state,
    }
    assert (o.text_embeds.norm(dim=-1) - 1).abs().max() < 1e-5
    for i, h in enumerate(t.hidden_states):
        rec[f"{prefix}text_hidden.{i}"] = h
    for i, h in enumerate(v.hidden_states):
        rec[f"{prefix}vision_hidden.{i}"] = h
    return rec


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    work = "/tmp/gram-bench-fixture-work"

    # ---------------- model, HF layout ----------------
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=MLP, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, max_position_embeddings=77, hidden_act="quick_gelu",
            bos_token_id=SOT, eos_token_id=EOT, pad_token_id=0, projection_dim=EMBED,
        ),
        vision_config=dict(
            hidden_size=WIDTH, intermediate_size=MLP, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            image_size=IMG, patch_size=PATCH, hidden_act="quick_gelu", projection_dim=EMBED,
        ),
        projection_dim=EMBED,
    )
    model = CLIPModel(cfg).eval()
    randomize(model)
    hf_dir = os.path.join(OUT, "tiny-clip-hf")
    model.save_pretrained(hf_dir, safe_serialization=True)
    tiny_tok = hf_tokenizer(VOCAB - 512 - 2, os.path.join(work, "tiny-tok"))
    tiny_tok.save_pretrained(os.path.join(work, "tiny-tok-saved"))
    shutil.copy(os.path.join(work, "tiny-tok-saved", "tokenizer.json"), os.path.join(hf_dir, "tokenizer.json"))
    assert tiny_tok.convert_tokens_to_ids("<|endoftext|>") == EOT

    # fixed inputs: two images, three prompts of different lengths (EOS is the highest id)
    pixels = torch.randn(2, 3, IMG, IMG)
    ids = torch.zeros(3, 77, dtype=torch.long)
    for r, n in enumerate((5, 12, 75)):
        ids[r, 0] = SOT
        ids[r, 1 : n + 1] = torch.randint(1, SOT, (n,))
        ids[r, n + 1] = EOT
    # legacy-rule probe: id 2 early, the highest id later; eos_token_id=2 must pool at argmax (the EOT)
    ids_legacy = ids.clone()
    ids_legacy[:, 2] = 2
    rec = {"pixel_values": pixels, "input_ids": ids.to(torch.int64), "input_ids_legacy": ids_legacy.to(torch.int64)}
    rec.update(model_outputs(model, pixels, ids, ""))

    legacy_cfg = CLIPConfig.from_dict(cfg.to_dict())
    legacy_cfg.text_config.eos_token_id = 2
    legacy = CLIPModel(legacy_cfg).eval()
    legacy.load_state_dict(model.state_dict())
    with torch.no_grad():
        lo = legacy(input_ids=ids_legacy, pixel_values=pixels)
        # what a wrong "first id == 2" rule would give: pooling at position 2
        wrong = legacy.text_projection(legacy.text_model(input_ids=ids_legacy).last_hidden_state[:, 2])
        wrong = wrong / wrong.norm(dim=-1, keepdim=True)
    assert not torch.allclose(lo.text_embeds, wrong, atol=1e-3), "legacy probe does not separate the rules"
    rec["legacy_text_embeds"] = lo.text_embeds

    # half-precision weights: outputs of the model whose weights are rounded to f16 / bf16, run in f32
    for dt, name in ((torch.float16, "f16"), (torch.bfloat16, "bf16")):
        m = CLIPModel(cfg).eval()
        m.load_state_dict({k: v.to(dt).to(torch.float32) for k, v in model.state_dict().items()})
        with torch.no_grad():
            o = m(input_ids=ids, pixel_values=pixels)
        rec[f"{name}_text_embeds"] = o.text_embeds
        rec[f"{name}_image_embeds"] = o.image_embeds
        rec[f"{name}_logits_per_image"] = o.logits_per_image

    # ---------------- OpenAI / open_clip layout ----------------
    sd = hf_to_openai(model.state_dict())
    oc_cfg = {
        "embed_dim": EMBED,
        "quick_gelu": True,
        "vision_cfg": {"image_size": IMG, "layers": LAYERS, "width": WIDTH, "head_width": WIDTH // HEADS, "patch_size": PATCH, "mlp_ratio": MLP / WIDTH},
        "text_cfg": {"context_length": 77, "vocab_size": VOCAB, "width": WIDTH, "heads": HEADS, "layers": LAYERS, "mlp_ratio": MLP / WIDTH},
    }
    oc = open_clip.model.CLIP(
        embed_dim=EMBED, vision_cfg=oc_cfg["vision_cfg"], text_cfg=oc_cfg["text_cfg"], quick_gelu=True
    ).eval()
    missing = oc.load_state_dict(sd, strict=True)
    oc_keys = set(oc.state_dict().keys())
    assert oc_keys == set(sd.keys()), oc_keys ^ set(sd.keys())
    with torch.no_grad():
        ie = oc.encode_image(pixels, normalize=True)
        te = oc.encode_text(ids, normalize=True)
        logits = oc.logit_scale.exp() * ie @ te.t()
    assert (ie - rec["image_embeds"]).abs().max() < 1e-5
    assert (te - rec["text_embeds"]).abs().max() < 1e-5
    assert (logits - rec["logits_per_image"]).abs().max() < 1e-4
    rec["openclip_image_embeds"] = ie
    rec["openclip_text_embeds"] = te
    rec["openclip_logits_per_image"] = logits
    save_file(sd, os.path.join(OUT, "tiny-clip-openai.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(OUT, "tiny-clip-openai.json"), "w") as f:
        json.dump(oc_cfg, f, indent=2)

    save_file({k: v.contiguous().clone() for k, v in rec.items()}, os.path.join(OUT, "reference.safetensors"))

    # ---------------- tokenizer ----------------
    full_tok = hf_tokenizer(49152 - 256 - 2, os.path.join(work, "full-tok"))
    strings = [
        "a photo of a cat.",
        "a photo of a {}.",
        "A PHOTO OF A DOG",
        "itap of a tench.",
        "a bad photo of the goldfish.",
        "a origami great white shark.",
        "a photo of a 747 jet at 10:45pm, gate B-12.",
        "3.14159 and 2,718,281 and 1e-5",
        "Hello, world!!! ... ?!",
        "don't won't can't it's we're they've I'm you'll he'd",
        "snake_case and kebab-case and CamelCaseWords",
        "email: someone@example.com, url: https://example.org/a?b=c&d=e",
        "tabs\tand\nnewlines   and    spaces",
        "   leading and trailing spaces   ",
        "café naïve résumé coöperate",
        "Straße Ærøskøbing Łódź",
        "日本語のテキスト",
        "中文字符测试",
        "한국어 문장",
        "Ελληνικά και Русский текст",
        "emoji 🐱🐶 and 👍🏽 and 🇫🇷",
        "math ∑ ∫ √ ≤ ≥ ≠ ∞ π",
        "a photo of a Yorkshire terrier, a type of pet.",
        "a photo of a Boeing 737-200, a type of aircraft.",
        "a photo of Abyssinian, a type of pet.",
        "a centered satellite photo of AnnualCrop.",
        "a photo of a person doing Apply_Eye_Makeup.",
        "a photo of a hen-of-the-woods, a type of food.",
        "<|startoftext|> literal specials <|endoftext|>",
        "x",
        "",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        " ".join(["over-long input keeps its end of text token"] * 12),
        "word " * 80,
        "1234567890" * 10,
    ]
    import open_clip.tokenizer as oct

    oc_tok = oct.SimpleTokenizer()
    entries = []
    for s in strings:
        hf_ids = full_tok(s, truncation=True, max_length=77)["input_ids"]
        oc_ids = oc_tok([s], context_length=77)[0].tolist()
        oc_ids = oc_ids[: (oc_ids.index(oct.SimpleTokenizer().eot_token_id) + 1)] if 49407 in oc_ids else oc_ids
        tiny_ids = tiny_tok(s, truncation=True, max_length=77)["input_ids"]
        entries.append({"text": s, "hf_ids": hf_ids, "open_clip_ids": oc_ids, "tiny_ids": tiny_ids})
    assert entries[0]["hf_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    with open(os.path.join(OUT, "tokens.json"), "w") as f:
        json.dump({"context_length": 77, "strings": entries}, f, ensure_ascii=False, indent=1)

    # ---------------- preprocessing on real images ----------------
    img_dir = os.path.join(OUT, "images")
    os.makedirs(img_dir)
    sample = os.path.join(os.path.dirname(__import__("matplotlib").__file__), "mpl-data", "sample_data")
    hopper = Image.open(os.path.join(sample, "grace_hopper.jpg"))  # 512x600 RGB photo
    present = Image.open(os.path.join(sample, "Minduka_Present_Blue_Pack.png"))
    hopper.save(os.path.join(img_dir, "hopper.jpg"), quality=90)
    hopper.convert("L").resize((301, 351), Image.BICUBIC).save(os.path.join(img_dir, "hopper_gray.jpg"), quality=85)
    rgba = hopper.resize((257, 300), Image.BICUBIC).convert("RGBA")
    alpha = Image.linear_gradient("L").resize(rgba.size)
    rgba.putalpha(alpha)
    rgba.save(os.path.join(img_dir, "hopper_rgba.png"))
    present.convert("RGB").quantize(64).save(os.path.join(img_dir, "present_palette.png"))
    hopper.crop((0, 0, 512, 231)).save(os.path.join(img_dir, "hopper_wide.png"))  # odd crop margin
    present.save(os.path.join(img_dir, "present.png"))

    eval_tf = open_clip.transform.image_transform(224, is_train=False)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
    pre = {}
    modes = {}
    for fn in sorted(os.listdir(img_dir)):
        im = Image.open(os.path.join(img_dir, fn))
        modes[fn] = im.mode
        # Dassl/CoOp (and HF's processor) convert to RGB on read, before any transform; open_clip's own
        # transform converts after resizing, which for RGBA resamples premultiplied alpha instead.
        x = eval_tf(im.convert("RGB"))
        u8 = ((x * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)
        assert ((u8.float() / 255.0 - mean) / std - x).abs().max() < 1e-5  # the u8 crop is the reference, exactly
        pre[fn] = u8.contiguous()
    save_file(pre, os.path.join(OUT, "preprocess.safetensors"))

    # ---------------- end to end: what `gram-bench clip embed` must print ----------------
    cli_images = ["hopper.jpg", "present_palette.png"]
    cli_texts = ["a photo of a cat.", "a diagram of a present, wrapped in blue!"]
    px = torch.stack([open_clip.transform.image_transform(IMG, is_train=False)(Image.open(os.path.join(img_dir, f)).convert("RGB")) for f in cli_images])
    tok_ids = torch.tensor([tiny_tok(t, padding="max_length", max_length=77, truncation=True)["input_ids"] for t in cli_texts])
    with torch.no_grad():
        o = model(input_ids=tok_ids, pixel_values=px)
    cli = {"images": cli_images, "texts": cli_texts, "image_embeds": o.image_embeds.tolist(),
           "text_embeds": o.text_embeds.tolist(), "logits_per_image": o.logits_per_image.tolist()}
    with open(os.path.join(OUT, "embed_expected.json"), "w") as f:
        json.dump(cli, f, indent=1)

    with open(os.path.join(OUT, "versions.json"), "w") as f:
        json.dump(
            {
                "torch": torch.__version__, "transformers": transformers.__version__,
                "open_clip": open_clip.__version__, "pillow": PIL.__version__, "image_modes": modes,
                "clip_mean": open_clip.OPENAI_DATASET_MEAN, "clip_std": open_clip.OPENAI_DATASET_STD,
            },
            f, indent=1,
        )
    print("fixtures written to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
