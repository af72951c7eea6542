#!/usr/bin/env bash
# Planted faults: how sensitive is `gram-bench check`? Each fault of the list below is planted in
# turn — a wrong value in a copy of the suite, or a bug switched on in a binary built with the
# `planted-faults` feature (src/faults.rs) — into a copy of a clean store; the cells it touches run
# again, and `check` against the saved baseline must fail. Then an unchanged rerun of cells with
# another thread count must pass. Prints the detection rate; exits non-zero on a missed fault or a
# false alarm.
#
# Usage (from the repository root, after clean runs of suites/smoke.toml and
# suites/gram-smoke.toml into STORE and their committed baselines `smoke` and `gram-smoke`):
#   tests/planted_faults.sh [STORE]        (default: results)
# FAULTS="name ..." plants only those faults (default: every one).
set -euo pipefail

store=${1:-results}
for name in smoke gram-smoke; do
  [ -d "$store/$name" ] || { echo "no clean records in $store/$name: run suites/$name.toml first" >&2; exit 2; }
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gram-bench/target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only this crate recompiles with the feature; the binary is copied out so the next plain build
# puts the fault-free one back.
cargo build --locked --quiet --features planted-faults
bin="$work/gram-bench-planted-faults"
cp "$CARGO_TARGET_DIR/debug/gram-bench" "$bin"

# fault | suite (its baseline has the same name) | how: a suite edit or a code fault | the edited
# table, or the fault's name | the sed edit | the method and dataset whose cells run again (and
# whose metrics `check --only` compares: every seed, shot count and protocol of them)
faults=(
  "coop-lr-x0.1|smoke|suite|methods.coop|s/optim = { lr = 0.02,/optim = { lr = 0.002,/|coop|shapes"
  "kgcoop-lambda-0|smoke|suite|methods.kgcoop|s/^weight = 8.0$/weight = 0.0/|kgcoop|patterns"
  "gram-regulator-bypassed|gram-smoke|suite|methods.gram-coop|s/^regulate = true$/regulate = false/|gram-coop|patterns"
  "frozen-prompt|smoke|code|frozen-prompt||coop|shapes"
  "shuffled-classnames|smoke|code|shuffled-classnames||zsclip|world"
  "wrong-split|smoke|code|wrong-split||zsclip|patterns"
)

# A fresh copy of the clean store and its own cache (a planted fault must not read or poison the
# feature cache of a clean run).
fresh() {
  mkdir -p "$work/$1/store"
  cp -r "$store/$2" "$work/$1/store/$2"
  mkdir -p "$work/$1/cache"
}

detected=0
total=0
for f in "${faults[@]}"; do
  IFS='|' read -r fault name how what edit method dataset <<<"$f"
  if [ -n "${FAULTS:-}" ] && [[ " $FAULTS " != *" $fault "* ]]; then
    continue
  fi
  only=(--only "method=$method" --only "dataset=$dataset")
  suite="suites/$name.toml"
  total=$((total + 1))
  fresh "$fault" "$name"
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
    "${only[@]}" --overwrite always --no-report >"$work/$fault/run.log" 2>&1 || {
    # Cells that fail under a fault leave no metrics: `check` reports them missing.
    echo "$fault: some cells failed under the fault: $(grep -c FAILED "$work/$fault/run.log" || true)"
  }
  if GRAM_BENCH_CACHE="$work/$fault/cache" "$bin" check "$copy" --baseline "$name" --store "$work/$fault/store" \
    "${only[@]}" >"$work/$fault/check.log" 2>&1; then
    echo "MISSED    $fault ($how)"
  else
    flagged=$(grep -c -E 'REGRESSED|CHANGED|MISSING' "$work/$fault/check.log" || true)
    echo "detected  $fault ($how): $flagged metrics flagged"
    detected=$((detected + 1))
  fi
done

# No false alarm: the same cells, unchanged, again with one thread.
fresh unchanged smoke
only=(--only method=coop --only dataset=patterns)
RAYON_NUM_THREADS=1 GRAM_BENCH_CACHE="$work/unchanged/cache" "$bin" run suites/smoke.toml --store "$work/unchanged/store" \
  "${only[@]}" --overwrite always --no-report >"$work/unchanged/run.log" 2>&1
if GRAM_BENCH_CACHE="$work/unchanged/cache" "$bin" check suites/smoke.toml --baseline smoke --store "$work/unchanged/store" \
  "${only[@]}" >"$work/unchanged/check.log" 2>&1; then
  alarm=0
  echo "no alarm  unchanged rerun of CoOp on patterns (every protocol, shot count, seed) with RAYON_NUM_THREADS=1"
else
  alarm=1
  echo "FALSE ALARM on the unchanged rerun:" >&2
  grep -E 'REGRESSED|CHANGED|MISSING' "$work/unchanged/check.log" >&2 || true
fi

echo "planted faults detected: $detected of $total; false alarms: $alarm"
[ "$detected" -eq "$total" ] && [ "$alarm" -eq 0 ]
