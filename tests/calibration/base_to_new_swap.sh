#!/usr/bin/env bash
# Where CoOp's gain on new classes comes from, on the pinned embedded world
# (docs/calibration-log.md, "Calibration log", runs O–Q). Not part of CI: a measurement, run by hand
# (about 3 min on 2 cores).
#
# Two 24-class datasets are cut from the `world` dataset's photo renders, their halves built with no
# word in common:
#   cbase: base = {red, orange, yellow, green, cyan, blue} × {circle, square},
#          new  = {triangle, diamond, star, cross, ring, hexagon} × {purple, pink};
#   sbase: the same two halves, swapped.
# The smoke suite's methods (zero-shot, CoOp, KgCoOp, ProGrad, CoCoOp) run base-to-new on both (5
# seeds), so each 12-class set is scored by a context trained on it and by one trained on the other
# half. Then `shapes` base-to-new (new shapes only) and zero-shot on cbase with other templates.
#
# Usage: tests/calibration/base_to_new_swap.sh [BINARY] [WORK_DIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$repo/target}/debug/gram-bench}
if [ ! -x "$bin" ]; then
    echo "base_to_new_swap.sh: no gram-bench binary at $bin (build it with cargo build, or pass its path)" >&2
    exit 2
fi
work=${2:-$(mktemp -d)}
cache=${GRAM_BENCH_CACHE:-$HOME/.cache/gram-bench}
mkdir -p "$work/data"
cd "$work"

key=$(GRAM_BENCH_CACHE=$cache "$bin" world build "$repo/suites/smoke.toml" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
world=$cache/world-$key/data/world

python3 - "$world" "$repo/suites/smoke.toml" "$work" <<'PY'
import json, os, sys
world, smoke, work = sys.argv[1:]
split = json.load(open(f"{world}/split_zhou_World.json"))
colours = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
shapes = ["circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon"]
colour_half = [f"{c} {s}" for c in colours[:6] for s in shapes[:2]]
shape_half = [f"{c} {s}" for s in shapes[2:] for c in colours[6:]]
for name, classes in {"cbase": colour_half + shape_half, "sbase": shape_half + colour_half}.items():
    os.makedirs(f"{work}/data/{name}", exist_ok=True)
    link = f"{work}/data/{name}/images"
    if not os.path.islink(link):
        os.symlink(f"{world}/images", link)
    label = {c: i for i, c in enumerate(classes)}
    out = {part: [[p, label[n], n] for p, _, n in items if n in label] for part, items in split.items()}
    json.dump(out, open(f"{work}/data/{name}/split_zhou_{name}.json", "w"))

text = open(smoke).read()
head = text[: text.index("[[experiment]]")].replace('name = "smoke"', 'name = "base-to-new-swap"')
templates = ["a photo of a {}.", "there is a {}.", "a photo of a large {}.", "a photo of a small {}.",
             "a photo of a {} in the centre.", "{}", "an image of a {}.", "a picture of a plain {}."]
datasets = ""
for name, folder, template in [("cbase", "cbase", templates[0]), ("sbase", "sbase", templates[0])] + [
        (f"cbase_t{i}", "cbase", t) for i, t in enumerate(templates[1:], 1)]:
    datasets += (f'\n[datasets.{name}]\nfolder = "{folder}"\nsplit_file = "split_zhou_{folder}.json"\n'
                 f'image_dir = "images"\ntemplate = "{template}"\n')
experiments = """
[[experiment]]
protocol = "base-to-new"
methods = ["zsclip", "coop", "kgcoop", "prograd", "cocoop"]
datasets = ["cbase", "sbase", "shapes"]
shots = [16]
seeds = [1, 2, 3, 4, 5]

[[experiment]]
protocol = "base-to-new"
methods = ["zsclip"]
datasets = [%s]
shots = [16]
seeds = [1]
""" % ", ".join(f'"cbase_t{i}"' for i in range(1, len(templates)))
open(f"{work}/base-to-new-swap.toml", "w").write(head + datasets + experiments)
PY

GRAM_BENCH_CACHE=$cache "$bin" run "$work/base-to-new-swap.toml" --store "$work/results" --data-root "$work/data" >/dev/null
echo "report: $work/reports/base-to-new-swap/report.md"
sed -n '/^## base-to-new/,/^\*\*Every row/p' "$work/reports/base-to-new-swap/report.md"
