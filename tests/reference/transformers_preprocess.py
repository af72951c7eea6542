#!/usr/bin/env python3
"""Fixture for `clip embed --processor transformers`: the uint8 crops transformers'
CLIPImageProcessor (its PIL backend, the one that needs no torch) makes of the test images.

Run once (CI never runs it):

    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install transformers pillow numpy safetensors
    /tmp/hfvenv/bin/python tests/reference/transformers_preprocess.py

Recorded with transformers 5.24.0, Pillow 13.0.0, numpy (see the JSON beside the fixture).

It first adds two images to tests/fixtures/images/ from the ones make_fixtures.py wrote, for the two
ways transformers differs from Dassl/torchvision: transparency is composited onto white
(`convert_to_rgb`: PIL's alpha_composite) where Dassl's `convert("RGB")` drops it, and the centre
crop's offset is floored where torchvision rounds it (half to even):
- hopper_odd.png: opaque RGB, 227 x 224, so the horizontal margin is 3 (floor 1, round 2);
- hopper_la.png: grey + alpha (LA), 224 x 231, so the vertical margin is 7 (floor 3, round 4);
- present_palette_alpha.png: a palette image whose centre pixel's index is transparent (PNG tRNS).
hopper_rgba.png (an alpha gradient) and hopper_wide.png (opaque, even margin: the same under both)
cover the rest.
"""
import json
import os

import numpy as np
import PIL
import safetensors
import transformers
from PIL import Image
from safetensors.numpy import save_file
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures")
IMAGES = os.path.join(OUT, "images")


def add_images():
    hopper = Image.open(os.path.join(IMAGES, "hopper.jpg"))
    grey = hopper.convert("L").resize((224, 262), Image.BICUBIC).crop((0, 10, 224, 241))
    alpha = Image.linear_gradient("L").rotate(90).resize(grey.size)
    la = Image.merge("LA", (grey, alpha))
    la.save(os.path.join(IMAGES, "hopper_la.png"))
    hopper.resize((227, 266), Image.BICUBIC).crop((0, 20, 227, 244)).save(os.path.join(IMAGES, "hopper_odd.png"))
    present = Image.open(os.path.join(IMAGES, "present.png")).convert("RGB").quantize(32)
    present.save(os.path.join(IMAGES, "present_palette_alpha.png"), transparency=present.getpixel((64, 64)))


def main():
    add_images()
    proc = CLIPImageProcessorPil()
    names = ["hopper_odd.png", "hopper_rgba.png", "hopper_la.png", "present_palette_alpha.png", "hopper_wide.png"]
    out = {}
    for fn in names:
        im = Image.open(os.path.join(IMAGES, fn))
        x = proc(im, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        u8 = np.round(x).clip(0, 255).astype(np.uint8)
        assert np.abs(u8.astype(np.float64) - x).max() == 0, fn  # the crop is integral: store it as u8
        assert u8.shape == (3, 224, 224), (fn, u8.shape)
        out[fn] = np.ascontiguousarray(u8)
    save_file(out, os.path.join(OUT, "preprocess_transformers.safetensors"))
    with open(os.path.join(OUT, "preprocess_transformers.json"), "w") as f:
        json.dump(
            {
                "transformers": transformers.__version__,
                "pillow": PIL.__version__,
                "numpy": np.__version__,
                "safetensors": safetensors.__version__,
                "processor": "CLIPImageProcessorPil (defaults: shortest edge 224 bicubic, crop 224, convert_rgb)",
                "images": names,
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
