#!/usr/bin/env bash
# Planted faults: how sensitive is `gram-bench check`? Each fault of the list below is planted in
# turn — a wrong value in a copy of the suite, or a bug switched on in a binary built with the
# `planted-faults` feature (src/faults.rs) — into a copy of a clean store; the cells it touches run
# again, and `check` against the saved baseline must fail. Then an unchanged rerun of cells with
# another thread count must pass. Prints the detection rate; exits non-zero on a missed fault or a
# false alarm.
#
# Usage (from the repository root, after a clean run of the suite and `baseline save`):
#   tests/planted_faults.sh [SUITE] [BASELINE] [STORE]
# defaults: suites/smoke.toml, smoke, results. Takes about 10 min on 2 cores.
set -euo pipefail

suite=${1:-suites/smoke.toml}
baseline=${2:-smoke}
store=${3:-results}
name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$suite" | head -n 1)
[ -d "$store/$name" ] || { echo "no clean records in $store/$name: run the suite first" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gram-bench/target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only this crate recompiles with the feature; the binary is copied out so the next plain build
# puts the fault-free one back.
cargo build --locked --quiet --features planted-faults
bin="$work/gram-bench-planted-faults"
cp "$CARGO_TARGET_DIR/debug/gram-bench" "$bin"

# name | how | what: a suite edit ("METHOD-TABLE|sed expression") or a code fault (its name) | cells
faults=(
  "coop-lr-x0.1|suite|methods.coop|s/optim = { lr = 0.02,/optim = { lr = 0.002,/|method=coop"
  "kgcoop-lambda-0|suite|methods.kgcoop|s/^weight = 8.0$/weight = 0.0/|method=kgcoop"
  "gram-regulator-bypassed|suite|methods.gram-coop|s/^regulate = true$/regulate = false/|method=gram-coop"
  "frozen-prompt|code|frozen-prompt||method=coop"
  "shuffled-classnames|code|shuffled-classnames||method=zsclip"
  "wrong-split|code|wrong-split||method=zsclip"
)

# A fresh copy of the clean store and its own cache (a planted fault must not read or poison the
# feature cache of a clean run).
fresh() {
  mkdir -p "$work/$1/store"
  cp -r "$store/$name" "$work/$1/store/$name"
  mkdir -p "$work/$1/cache"
}

detected=0
total=0
for f in "${faults[@]}"; do
  IFS='|' read -r fault how what edit only <<<"$f"
  total=$((total + 1))
  fresh "$fault"
  copy="$work/$fault/suite.toml"
  cp "$suite" "$copy"
  env=()
  if [ "$how" = suite ]; then
    table=$(printf '%s' "$what" | sed 's/\./\\./g')
    sed -i "/^\[$table\]\$/,/^\[/ $edit" "$copy"
    if cmp -s "$suite" "$copy"; then
      echo "$fault: the edit changed nothing in $suite" >&2
      exit 2
    fi
  else
    env=(GRAM_BENCH_PLANTED_FAULT="$what")
  fi
  env "${env[@]}" GRAM_BENCH_CACHE="$work/$fault/cache" "$bin" run "$copy" --store "$work/$fault/store" \
    --only "$only" --overwrite always >"$work/$fault/run.log" 2>&1 || {
    echo "$fault: the run failed (see below)" >&2
    tail -n 20 "$work/$fault/run.log" >&2
    exit 2
  }
  if GRAM_BENCH_CACHE="$work/$fault/cache" "$bin" check "$copy" --baseline "$baseline" --store "$work/$fault/store" \
    >"$work/$fault/check.log" 2>&1; then
    echo "MISSED    $fault ($how)"
  else
    flagged=$(grep -c -E 'REGRESSED|CHANGED|MISSING' "$work/$fault/check.log" || true)
    echo "detected  $fault ($how): $flagged metrics flagged"
    detected=$((detected + 1))
  fi
done

# No false alarm: the same cells, unchanged, again with one thread.
fresh unchanged
RAYON_NUM_THREADS=1 GRAM_BENCH_CACHE="$work/unchanged/cache" "$bin" run "$suite" --store "$work/unchanged/store" \
  --only method=coop --overwrite always >"$work/unchanged/run.log" 2>&1
if GRAM_BENCH_CACHE="$work/unchanged/cache" "$bin" check "$suite" --baseline "$baseline" --store "$work/unchanged/store" \
  >"$work/unchanged/check.log" 2>&1; then
  alarm=0
  echo "no alarm  unchanged rerun of method=coop with RAYON_NUM_THREADS=1"
else
  alarm=1
  echo "FALSE ALARM on the unchanged rerun:" >&2
  grep -E 'REGRESSED|CHANGED|MISSING' "$work/unchanged/check.log" >&2 || true
fi

echo "planted faults detected: $detected of $total; false alarms: $alarm"
[ "$detected" -eq "$total" ] && [ "$alarm" -eq 0 ]
