#!/usr/bin/env bash
# The encoder table of docs/performance.md, "Performance", measured side by side: for each case, burn's criterion
# bench (benches/encoders.rs) and PyTorch's (benches/pytorch_encoders.py) one after the other, at
# the same thread count, for each build given. Medians: criterion's estimate for burn, over --reps
# timed runs for PyTorch. Prints a markdown table and writes it as JSON.
#
#   benches/side_by_side.sh --python /tmp/pyref/bin/python [--threads 2] [--reps 5] \
#       [--build default=""] [--build avx512="--features avx512"] [--case image_forward/8 ...] [--out F.json]
#
# Needs torch and open_clip in --python's environment; CARGO_TARGET_DIR as for any build.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3; threads=$(nproc); reps=5; out=side_by_side.json
builds=(); cases=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --python) python=$2; shift 2;;
    --threads) threads=$2; shift 2;;
    --reps) reps=$2; shift 2;;
    --build) builds+=("$2"); shift 2;;
    --case) cases+=("$2"); shift 2;;
    --out) out=$2; shift 2;;
    *) echo "error: unknown argument $1" >&2; exit 2;;
  esac
done
[[ ${#builds[@]} -gt 0 ]] || builds=("default=")
[[ ${#cases[@]} -gt 0 ]] || cases=(image_forward/8 text_forward/100 image_forward_backward_vpt/8 text_forward_backward_ctx/100)
"$python" -c "import torch, open_clip" || { echo "error: $python has no torch/open_clip" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-target}
declare -A exe
for b in "${builds[@]}"; do
  name=${b%%=*}; flags=${b#*=}
  # The bench executable cargo built for these flags (its path is in cargo's JSON messages).
  exe[$name]=$(cargo bench --bench encoders --no-run --message-format=json $flags 2>/dev/null \
    | "$python" -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="encoders" and m.get("executable"): print(m["executable"])' | tail -1)
  [[ -x ${exe[$name]} ]] || { echo "error: no bench executable for build $name ($flags)" >&2; exit 1; }
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for c in "${cases[@]}"; do
  for b in "${builds[@]}"; do
    name=${b%%=*}
    RAYON_NUM_THREADS=$threads CRITERION_HOME="$tmp/criterion-$name" "${exe[$name]}" --bench "^vit_b16/cpu_flex/$c\$" \
      >"$tmp/$name.log" 2>&1 || { cat "$tmp/$name.log" >&2; exit 1; }
  done
  "$python" benches/pytorch_encoders.py --threads "$threads" --reps "$reps" --case "$c" >>"$tmp/torch.jsonl"
done
"$python" - "$tmp" "$out" "$threads" "${builds[@]}" <<'PY'
import json, sys, pathlib
tmp, out, threads, builds = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], [b.split("=", 1)[0] for b in sys.argv[4:]]
torch = {j["case"]: j for j in map(json.loads, (tmp / "torch.jsonl").read_text().splitlines())}
rows = []
for case, t in torch.items():
    row = {"case": case, "pytorch_s": t["median_s"], "torch": t["torch"], "threads": int(threads)}
    for b in builds:
        # criterion writes the group's "/" as "_": vit_b16_cpu_flex/<case>/new/estimates.json
        est = next(p for p in (tmp / f"criterion-{b}").rglob("estimates.json")
                   if p.as_posix().endswith(f"cpu_flex/{case}/new/estimates.json"))
        row[f"{b}_s"] = json.loads(est.read_text())["median"]["point_estimate"] / 1e9
    rows.append(row)
pathlib.Path(out).write_text(json.dumps(rows, indent=1))
print("| case | " + " | ".join(f"burn {b}" for b in builds) + " | PyTorch | " + " | ".join(f"{b} / PyTorch" for b in builds) + " |")
print("|---" * (2 + 2 * len(builds)) + "|")
for r in rows:
    print(f"| {r['case']} | " + " | ".join(f"{r[b + '_s']:.2f} s" for b in builds) + f" | {r['pytorch_s']:.2f} s | "
          + " | ".join(f"{r[b + '_s'] / r['pytorch_s']:.2f}×" for b in builds) + " |")
PY
