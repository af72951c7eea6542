#!/usr/bin/env bash
# Fault injection against the built binary: what an operator and a damaged disk do to a run, and
# what the store and caches must do about it (docs/reliability.md, "Reliability: what the store and
# caches guarantee"). One line per case, a total, and a non-zero exit on any miss.
#
#   kill -9 at random points of a run × KILLS (default 20), each resumed; the records' numbers and
#     the trained prompts then equal an uninterrupted run's
#   SIGINT: the run says what it recorded and how to resume
#   three runners at once on a suite with GRAM cross-domain: every runner exits 0, no false failure
#   a truncated JPEG; bit-flipped cached micro-CLIP weights; a relabelled cached split; a feature-cache entry with a damaged
#   payload; a feature cache that cannot be written; a test image truncated while its features are cached; a record copied under another
#   cell's name; a record of schema 99; temp files of a killed writer and a live one; more shots than a class
#   has; --only twice on one field (plan and run agree); a refused suite leaves no results folder;
#   a runner whose every cell is busy in another runner exits 0; a bit flipped in an epoch checkpoint;
#   absurd suite numbers (a huge
#   epoch count, NaN tolerance, zero corpus, negative rate) refused in one line with nothing built;
#   released checkpoints of 300,000 nested lists or a 2^40 memo bomb fail their cells cleanly, one of
#   NaN prompts is refused; an
#   sbatch value with a newline is refused; SIGTERM stops a child run too
#
# Usage (repository root): tests/fault_injection.sh [BIN]   (default: the debug build, built here)
set -uo pipefail

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/gram-bench/target}
if [ $# -ge 1 ]; then
  bin=$(realpath "$1")
else
  cargo build --locked --quiet || exit 2
  bin="$CARGO_TARGET_DIR/debug/gram-bench"
fi
kills=${KILLS:-20}
repo=$(pwd)
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); printf 'PASS  %s\n' "$1"; }
miss() { fail=$((fail + 1)); printf 'MISS  %s: %s\n' "$1" "$2"; }

# A small suite with SGD cells long enough to be killed mid-training (the tiny test world).
suite() {
  cat <<'EOF'
schema = 1
name = "faults"
version = 1
description = "fault injection"
published = []
[backbone]
name = "micro-clip"
[precision]
default = "f32"
[world]
seed = 3
test_images = 256
image_size = 16
patch_size = 8
width = 32
layers = 1
context_length = 32
corpus_size = 64
steps = 2
batch_size = 16
lr = 0.001
weight_decay = 0.1
warmup_steps = 1
[eval]
batch_size = 64
[data]
fewshot = "sample"
on_corrupt = "fail"
[check]
abs_tolerance = 0.0
std_factor = 0.0
fail_on = "any-change"
[methods.zs]
kind = "zeroshot"
templates = "dataset"
[methods.coop]
kind = "coop"
n_ctx = 4
ctx_init = "a photo of a"
init_std = 0.02
csc = false
class_token_position = "end"
batch_size = 8
epochs = 120
optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, warmup_lr = 1e-5 }
[[experiment]]
protocol = "few-shot"
methods = ["zs", "coop"]
datasets = ["shapes", "patterns"]
shots = [4]
seeds = [1, 2, 3]
EOF
}

# gram-bench in a case's folder, with its own cache.
gb() { (cd "$dir" && GRAM_BENCH_CACHE="$dir/cache" "$bin" "$@"); }
new_case() {
  dir="$work/$1"
  mkdir -p "$dir"
  suite >"$dir/faults.toml"
}

# The reference: one uninterrupted run, its baseline and its trained prompts.
new_case reference
if ! gb run faults.toml --no-report >"$dir/run.log" 2>&1 || ! gb baseline save ref faults.toml >/dev/null 2>&1; then
  cat "$dir/run.log"
  echo "the reference run failed" >&2
  exit 2
fi
ref="$work/reference"

# Numbers and trained prompts of the case's store equal the reference's.
same_as_reference() {
  cp "$ref/baselines/ref.json" "$dir/baselines/" 2>/dev/null || { mkdir -p "$dir/baselines" && cp "$ref/baselines/ref.json" "$dir/baselines/"; }
  gb check faults.toml --baseline ref >"$dir/check.log" 2>&1 || { echo "check: $(tail -3 "$dir/check.log")"; return 1; }
  local a
  for a in "$ref"/results/faults/artifacts/*.json; do
    cmp -s "$a" "$dir/results/faults/artifacts/$(basename "$a")" || { echo "prompt $(basename "$a") differs"; return 1; }
  done
}

# 1. kill -9 at random points, each run resuming the last; then one run to the end.
new_case kill9
# The world first: killing its build is another matter (a build is written whole or not at all).
gb world build faults.toml >/dev/null 2>&1
killed_mid_cell=0
for i in $(seq 1 "$kills"); do
  (cd "$dir" && GRAM_BENCH_CACHE="$dir/cache" exec "$bin" run faults.toml --no-report >>"$dir/kills.log" 2>&1) &
  pid=$!
  disown "$pid" # no "Killed" line from the shell
  sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 0.3 + rand() * 2.2 }')"
  if kill -9 "$pid" 2>/dev/null; then
    ls "$dir"/results/faults/artifacts/*.train-checkpoint.json >/dev/null 2>&1 && killed_mid_cell=$((killed_mid_cell + 1))
  fi
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
done
if gb run faults.toml --no-report >>"$dir/kills.log" 2>&1 && why=$(same_as_reference); then
  ok "kill -9 × $kills ($killed_mid_cell inside an SGD cell with its epoch checkpoint): resumed records equal an uninterrupted run"
else
  miss "kill -9 × $kills" "${why:-the final run failed: $(tail -2 "$dir/kills.log")}"
fi

# 2. SIGINT says what was recorded and how to resume.
new_case sigint
(cd "$dir" && GRAM_BENCH_CACHE="$dir/cache" exec "$bin" run faults.toml --no-report 2>"$dir/err.log") &
pid=$!
sleep 3
kill -INT "$pid"
wait "$pid"
rc=$?
if [ "$rc" -eq 130 ] && grep -q "SIGINT: stopped. This run recorded" "$dir/err.log" && grep -q "run the same command again" "$dir/err.log"; then
  ok "SIGINT: exit 130 with what was recorded and how to resume"
else
  miss "SIGINT" "exit $rc: $(tail -2 "$dir/err.log")"
fi

# 3. Three runners at once; GRAM meta-training two levels above cross-domain eval cells.
new_case concurrent
suite | sed '/^\[\[experiment\]\]/,$d; s/^epochs = 120$/epochs = 5/' >"$dir/faults.toml"
cat >>"$dir/faults.toml" <<'EOF'
[gram.meta]
seed = 1
corpus = { world = { size = 60 } }
[gram.meta.train]
text = { n_ctx = 4, depth = 1 }
init_std = 0.02
inner_lr = 1.0
inner_steps = 1
task_embedding = "image-mean"
outer_lr = 1e-3
weight_decay = 0.0
adam_epsilon = 1e-8
clip_norm = 1.0
steps = 60
tasks_per_step = 1
cluster = { domains = 2, classes_per_domain = 2, iterations = 5, order = "captions-then-images" }
episode = { ways = 2, shots = 1, queries = 2, query = "nearest-class-other-domain" }
regulator = { rank = 4, hidden_layers = 0, coef_hidden = 8, init = "xavier" }
[methods.gram-coop]
kind = "gram"
host = "coop"
meta = "meta"
init = true
regulate = true
[[experiment]]
protocol = "cross-domain"
methods = ["coop", "gram-coop"]
datasets = ["world"]
targets = ["world_sketch", "world_cartoon"]
shots = [1]
seeds = [1, 2, 3]
EOF
gb world build faults.toml >/dev/null 2>&1
for r in 1 2 3; do
  (cd "$dir" && GRAM_BENCH_CACHE="$dir/cache" "$bin" run faults.toml --no-report >"$dir/r$r.log" 2>&1; echo $? >"$dir/r$r.rc") &
done
wait
rcs="$(cat "$dir"/r1.rc "$dir"/r2.rc "$dir"/r3.rc | tr '\n' ' ')"
if [ "$rcs" = "0 0 0 " ] && ! grep -q FAILED "$dir"/r?.log && gb plan faults.toml 2>/dev/null | grep -q " 0 missing"; then
  ok "three concurrent runners: all exit 0, no false failure, every cell recorded"
else
  miss "three concurrent runners" "exit codes $rcs; $(grep -h FAILED "$dir"/r?.log | head -1)"
fi

# 4. A truncated JPEG is refused (PIL: "image file is truncated").
dir="$work/jpeg"
mkdir -p "$dir"
head -c -8 "$repo/tests/fixtures/images/hopper.jpg" >"$dir/cut.jpg"
if ! out=$("$bin" clip embed --model "$repo/tests/fixtures/tiny-clip-hf" --image "$dir/cut.jpg" 2>&1) &&
  grep -q "truncated JPEG" <<<"$out"; then
  ok "a JPEG missing its last 8 bytes is refused"
else
  miss "truncated JPEG" "accepted: $(head -c 200 <<<"$out")"
fi
# The same cut behind a comment segment holding a start-of-scan and end-of-image pair (as an EXIF
# thumbnail does), which fooled a byte-pattern check: libjpeg's own end-of-data signal decides.
{
  head -c 2 "$repo/tests/fixtures/images/hopper.jpg"
  printf '\xff\xfe\x00\x06\xff\xda\xff\xd9'
  tail -c +3 "$repo/tests/fixtures/images/hopper.jpg" | head -c -4000
} >"$dir/commented.jpg"
if ! out=$("$bin" clip embed --model "$repo/tests/fixtures/tiny-clip-hf" --image "$dir/commented.jpg" 2>&1) &&
  grep -q "truncated JPEG" <<<"$out"; then
  ok "a cut JPEG behind a comment holding FF DA … FF D9 is refused"
else
  miss "truncated JPEG behind a comment" "accepted: $(head -c 200 <<<"$out")"
fi

# 5. Bit-flipped cached micro-CLIP weights (same size) are refused before any cell.
new_case weights
cp -r "$ref/cache" "$dir/cache"
model=$(ls "$dir"/cache/world-*/micro-clip/model.safetensors 2>/dev/null | head -1)
if [ -z "$model" ]; then
  miss "bit-flipped weights" "no cached model.safetensors found"
else
  size=$(stat -c %s "$model")
  printf '\x55\xaa\x55\xaa' | dd of="$model" bs=1 seek=$((size - 64)) conv=notrunc status=none
  if ! out=$(gb run faults.toml --no-report 2>&1) && grep -q "differs from its build: the micro-CLIP's weights" <<<"$out"; then
    ok "bit-flipped cached micro-CLIP weights (same size) are refused before any cell"
  else
    miss "bit-flipped weights" "not refused: $(tail -1 <<<"$out")"
  fi
fi

# 5b. A cached world's split file relabelled in place (its manifest edited or not) is refused
# before any cell, where it used to give other numbers under the same cell keys.
new_case relabel
cp -r "$ref/cache" "$dir/cache"
split=$(ls "$dir"/cache/world-*/data/*/split_zhou_*.json 2>/dev/null | head -1)
if [ -z "$split" ]; then
  miss "relabelled split" "no cached split file found"
else
  python3 - "$split" <<'PY'
import json, sys
p = sys.argv[1]
s = json.load(open(p))
labels = sorted({e[1] for e in s["test"]})
for e in s["test"][:20]:
    e[1] = labels[(labels.index(e[1]) + 1) % len(labels)]
json.dump(s, open(p, "w"))
PY
  if ! out=$(gb run faults.toml --no-report 2>&1) && grep -q "the cached world differs from its build" <<<"$out" &&
    [ ! -d "$dir/results/faults/records" -o -z "$(ls "$dir/results/faults/records" 2>/dev/null)" ]; then
    ok "a cached world's split file relabelled in place is refused before any cell"
  else
    miss "relabelled split" "not refused: $(tail -1 <<<"$out")"
  fi
fi

# 6. A feature-cache entry whose payload was changed in place is recomputed, not trusted.
new_case features
cp -r "$ref/cache" "$dir/cache"
cp -r "$ref/results" "$dir/results"
for f in "$dir"/cache/features/*.safetensors; do
  size=$(stat -c %s "$f")
  printf '\xff\xff\xff\xff' | dd of="$f" bs=1 seek=$((size - 16)) conv=notrunc status=none
done
if gb run faults.toml --no-report --only method=zs --overwrite always >"$dir/run.log" 2>&1 && why=$(same_as_reference); then
  ok "damaged feature-cache payloads are recomputed: zero-shot equals the reference"
else
  miss "damaged feature cache" "${why:-$(tail -2 "$dir/run.log")}"
fi

# 6b. A feature cache that cannot be written (issue item 11; here its folder is a file, as a full
# disk would refuse it) is a warning: the cells run without it, to the reference's numbers.
new_case featwrite
cp -r "$ref/cache" "$dir/cache"
cp -r "$ref/results" "$dir/results"
rm -rf "$dir/cache/features"
touch "$dir/cache/features"
if gb run faults.toml --no-report --only method=zs --overwrite always >"$dir/run.log" 2>&1 &&
  grep -qi "warning.*feature" "$dir/run.log" && why=$(same_as_reference); then
  ok "a feature cache that cannot be written is a warning; the cells equal the reference"
else
  miss "unwritable feature cache" "${why:-$(grep -m1 -i "error\|warning" "$dir/run.log")}"
fi

# 7. A test image truncated while its features are cached: the world's digests stop the run
# before any cell (the feature cache's own key, for datasets outside the world, is `features::tests`).
new_case image
cp -r "$ref/cache" "$dir/cache"
img=$(find "$dir"/cache/world-*/data/shapes -name 'test_*.png' | sort | head -1)
truncate -s 40 "$img"
if ! out=$(gb run faults.toml --no-report --only method=zs 2>&1) && grep -q "differs from its build: dataset \`shapes\`" <<<"$out"; then
  ok "a test image truncated under a warm feature cache stops the run, naming its dataset"
else
  miss "truncated test image under a warm cache" "$(tail -2 <<<"$out")"
fi

# 8. A record copied under another cell's name, and a record of schema 99, are refused.
new_case records
cp -r "$ref/results" "$dir/results"
cp -r "$ref/cache" "$dir/cache"
recs=("$dir"/results/faults/records/*.json)
cp "${recs[0]}" "$dir/saved.json"
cp "${recs[1]}" "${recs[0]}"
if ! out=$(gb report faults.toml 2>&1) && grep -q "holds the record of cell" <<<"$out"; then
  ok "a record under another cell's file name is refused"
else
  miss "swapped record" "$(tail -1 <<<"$out")"
fi
sed 's/"schema": 1,/"schema": 99,/' "$dir/saved.json" >"${recs[0]}"
if ! out=$(gb report faults.toml 2>&1) && grep -q "record schema 99" <<<"$out"; then
  ok "a record of schema 99 is refused"
else
  miss "schema 99" "$(tail -1 <<<"$out")"
fi
cp "$dir/saved.json" "${recs[0]}"

# 9. A killed writer's temp file (unlocked, an hour old) is swept; a live writer's (locked, as
# write_atomic holds it; from this host or another sharing the store, whatever pid it names) is not.
t="$dir/results/faults/records"
touch -d '1 hour ago' "$t/.x.json.tmp-4194304" "$t/.y.json.tmp-1-1-ff"
flock "$t/.y.json.tmp-1-1-ff" sleep 30 &
holder=$!
sleep 0.3
gb run faults.toml --no-report >/dev/null 2>&1
if [ ! -e "$t/.x.json.tmp-4194304" ] && [ -e "$t/.y.json.tmp-1-1-ff" ]; then
  ok "a killed writer's temp file is removed, a live writer's (locked) kept"
else
  miss "stale temp file" "$(ls -a "$t" | grep tmp- | tr '\n' ' ')"
fi
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

# 10. More shots than a class has fails the cell, saying so.
new_case shots
sed -i 's/^shots = \[4\]/shots = [5000]/' "$dir/faults.toml"
if ! out=$(gb run faults.toml --no-report --only method=coop --only seed=1 2>&1) && grep -q "fewer than the 5000 shots" <<<"$out"; then
  ok "more shots than a class has is an error, not a quiet cap"
else
  miss "shots cap" "$(grep -m1 -i 'shots\|FAILED' <<<"$out")"
fi

# 11. --only twice on one field: plan and run select the same cells; nothing selected is an error.
new_case only
n_plan=$(gb plan faults.toml --only method=zs --only method=coop 2>/dev/null | grep -c '^| ')
n_all=$(gb plan faults.toml 2>/dev/null | grep -c '^| ')
if [ "$n_plan" -eq "$n_all" ] && ! gb plan faults.toml --only method=nope >/dev/null 2>&1 &&
  ! gb run faults.toml --only method=nope >/dev/null 2>&1; then
  ok "--only method=zs --only method=coop selects both in plan; an empty selection fails plan and run"
else
  miss "--only" "plan rows $n_plan of $n_all"
fi

# 12. A refused suite creates no results folder.
new_case refused
sed -i 's/^version = 1/version = "x"/' "$dir/faults.toml"
gb run faults.toml >/dev/null 2>&1
if [ ! -e "$dir/results" ]; then
  ok "a refused suite leaves no results folder"
else
  miss "refused suite" "results/ was created"
fi

# 13. A runner that finds every cell it may take busy in another runner exits 0 and says so (its
# report step too), instead of failing for want of finished cells.
new_case all_busy
gb world build faults.toml >/dev/null 2>&1
one=(--only method=coop --only dataset=shapes --only seed=1)
(cd "$dir" && GRAM_BENCH_CACHE="$dir/cache" exec "$bin" run faults.toml --no-report "${one[@]}" >"$dir/first.log" 2>&1) &
first=$!
held=0
for _ in $(seq 1 200); do
  for l in "$dir"/results/faults/locks/*.lock; do
    [ -e "$l" ] && ! flock -n "$l" true 2>/dev/null && held=1
  done
  [ "$held" = 1 ] && break
  sleep 0.05
done
out=$(gb run faults.toml "${one[@]}" 2>&1)
rc=$?
wait "$first"
if [ "$held" = 1 ] && [ "$rc" -eq 0 ] && grep -Eq "nothing finished yet: [0-9]+ cells are being computed by other runners" <<<"$out"; then
  ok "every cell busy in another runner: exit 0, saying what the other runner is computing"
else
  miss "every cell busy" "lock seen: $held, exit $rc: $(tail -2 <<<"$out")"
fi

# 14b. A bit flipped in an epoch checkpoint (issue item 4) is refused, naming the file, instead of
# resuming from it; the cell's failed record replaces it, and the next run starts the cell over to
# the reference's numbers.
new_case epochflip
gb world build faults.toml >/dev/null 2>&1
(cd "$dir" && GRAM_BENCH_CACHE="$dir/cache" exec "$bin" run faults.toml --no-report >"$dir/first.log" 2>&1) &
pid=$!
disown "$pid"
for _ in $(seq 1 600); do
  ls "$dir"/results/faults/artifacts/*.train-checkpoint.json >/dev/null 2>&1 && break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
cp=$(ls "$dir"/results/faults/artifacts/*.train-checkpoint.json 2>/dev/null | head -1)
if [ -z "$cp" ]; then
  miss "flipped epoch checkpoint" "no epoch checkpoint was written before the kill"
else
  size=$(stat -c %s "$cp")
  byte=$(od -An -tu1 -j $((size / 2)) -N1 "$cp" | tr -d ' ')
  printf "$(printf '\\%03o' $((byte ^ 1)))" | dd of="$cp" bs=1 seek=$((size / 2)) conv=notrunc status=none
  out=$(gb run faults.toml --no-report 2>&1)
  if grep -q "damaged training checkpoint" <<<"$out" && grep -q "$(basename "$cp")" <<<"$out" && [ ! -e "$cp" ] &&
    gb run faults.toml --no-report >"$dir/last.log" 2>&1 && why=$(same_as_reference); then
    ok "a bit flipped in an epoch checkpoint is refused; the next run starts the cell over to the reference's numbers"
  else
    miss "flipped epoch checkpoint" "${why:-$(grep -m1 -i "checkpoint\|error" <<<"$out")}"
  fi
fi

# 15. Absurd numbers in a suite (issue items 3 and 6) are refused by `validate` and by `run`, one
# line naming the field, before anything is built or recorded.
new_case numbers
for edit in 's/^epochs = 120$/epochs = 1000000000000/' 's/^abs_tolerance = 0.0$/abs_tolerance = nan/' \
  's/^corpus_size = 64$/corpus_size = 0/' 's/^lr = 0.001$/lr = -1.0/'; do
  suite | sed "$edit" >"$dir/faults.toml"
  field=$(sed -E 's|^s/\^([a-z_]+) .*|\1|' <<<"$edit")
  out=$(gb validate faults.toml 2>&1)
  rc=$?
  run_out=$(gb run faults.toml --no-report 2>&1)
  run_rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ $run_rc -ne 0 ] && [ $run_rc -lt 128 ] && grep -q "$field" <<<"$out" &&
    [ "$(grep -c . <<<"$out")" -le 2 ] && [ ! -d "$dir/results" ] && [ ! -d "$dir/cache" ]; then
    ok "suite value refused in one message, nothing built or recorded: $(sed -E 's|^s/\^(.*)\$/(.*)/$|\2|' <<<"$edit")"
  else
    miss "suite value $edit" "validate rc=$rc, run rc=$run_rc: $(tail -1 <<<"$out")"
  fi
  rm -rf "$dir/results" "$dir/cache"
done

# 16. Hostile released checkpoints (issue item 7): 300,000 nested lists and a memo chain that would
# expand to 2^40 items. Each cell fails with one error naming the file; the process neither
# overflows its stack nor runs out of memory, and the next cell still runs.
new_case pickle
python3 - "$dir" <<'PY'
import struct, sys, zipfile
d = sys.argv[1]
deep = b"\x80\x02" + b"]" * 300000 + b"a" * 299999 + b"."
bomb = b"\x80\x02]q\x00"
for i in range(1, 41):
    bomb += b"(h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"lq" + bytes([i])
bomb += b"."
for name, pkl in [("deep", deep), ("bomb", bomb)]:
    with zipfile.ZipFile(f"{d}/{name}.pth.tar", "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
PY
for name in deep bomb; do
  suite | sed -e 's/^methods = \["zs", "coop"\]$/methods = ["coop"]/' \
    -e "s|^seeds = \[1, 2, 3\]\$|seeds = [1]\ncheckpoint = \"$dir/$name.pth.tar\"|" >"$dir/faults.toml"
  out=$(gb run faults.toml --no-report 2>&1)
  rc=$?
  failed=$(grep -c "FAILED" <<<"$out")
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$failed" -ge 2 ] && grep -q "$name.pth.tar" <<<"$out"; then
    ok "a released checkpoint of $([ $name = deep ] && echo '300,000 nested lists' || echo 'a 2^40 memo bomb') fails its cells with one error each, no crash"
  else
    miss "hostile checkpoint $name" "rc=$rc, $failed failed: $(tail -2 <<<"$out")"
  fi
  rm -rf "$dir/results"
done

# 16b. A released prompt of NaN (issue item 5) fails its cells, naming the tensor; the same file
# with finite values is evaluated (a torch.save archive written here with the standard library).
new_case nanprompt
python3 - "$dir" <<'PY'
import struct, sys, zipfile
d = sys.argv[1]
rows, width = 4, 32  # CoOp's 4 context vectors at the test world's width
def u(s):
    b = s.encode(); return b"X" + struct.pack("<I", len(b)) + b
def i(n): return b"J" + struct.pack("<i", n)
n = rows * width
storage = b"(" + u("storage") + b"ctorch\nFloatStorage\n" + u("0") + u("cpu") + i(n) + b"tQ"
tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + i(0) + b"(" + i(rows) + i(width) + b"t"
          + b"(" + i(width) + i(1) + b"t" + b"\x89" + b"ccollections\nOrderedDict\n)R" + b"tR")
pkl = b"\x80\x02}" + u("state_dict") + b"}" + u("ctx") + tensor + b"s" + b"s" + u("epoch") + i(2) + b"s."
for name, value in [("nan", float("nan")), ("finite", 0.01)]:
    with zipfile.ZipFile(f"{d}/{name}.pth.tar", "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", struct.pack("<f", value) * n)
        z.writestr("archive/version", "3\n")
PY
for name in nan finite; do
  suite | sed -e 's/^methods = \["zs", "coop"\]$/methods = ["coop"]/' \
    -e "s|^seeds = \[1, 2, 3\]\$|seeds = [1]\ncheckpoint = \"$dir/$name.pth.tar\"|" >"$dir/faults.toml"
  gb run faults.toml --no-report >"$dir/$name.log" 2>&1
  eval "rc_$name=$?"
  rm -rf "$dir/results"
done
if [ "$rc_nan" -eq 1 ] && [ "$(grep -c "ctx\` holds NaN" "$dir/nan.log")" -eq 2 ] && [ "$rc_finite" -eq 0 ]; then
  ok "a released prompt of NaN fails its cells naming the tensor; the same file with finite values is evaluated"
else
  miss "NaN released prompt" "rc $rc_nan / $rc_finite: $(tail -1 "$dir/nan.log") / $(tail -1 "$dir/finite.log")"
fi

# 17. An sbatch value with a newline (issue item 10) is refused before any script is written.
new_case sbatch
out=$(gb slurm submit faults.toml --dry-run --partition "$(printf 'gpu\n#SBATCH --dependency=none')" 2>&1)
rc=$?
if [ $rc -ne 0 ] && [ $rc -lt 128 ] && ! grep -q "^#SBATCH" <<<"$out" && grep -qi "partition" <<<"$out"; then
  ok "an sbatch value holding a newline is refused"
else
  miss "sbatch newline" "rc=$rc: $(tail -1 <<<"$out")"
fi

# 14. SIGTERM while another precision's cells run in a child process: the child stops with the
# parent (none goes on to record a cell), and the parent says so.
new_case child
sed -i 's/^default = "f32"$/default = "f32"\nmethods = { coop = "f16" }/' "$dir/faults.toml"
gb world build faults.toml >/dev/null 2>&1
(cd "$dir" && GRAM_BENCH_CACHE="$dir/cache" exec "$bin" run faults.toml --no-report 2>"$dir/err.log") &
parent=$!
child=""
for _ in $(seq 1 600); do
  child=$(pgrep -P "$parent" -f -- "--precision-group" || true)
  [ -n "$child" ] && break
  sleep 0.1
done
sleep 1
kill -TERM "$parent"
wait "$parent"
rc=$?
sleep 0.5
records_then=$(ls "$dir"/results/faults/records | wc -l)
sleep 2
records_later=$(ls "$dir"/results/faults/records | wc -l)
if [ -n "$child" ] && [ "$rc" -eq 143 ] && ! kill -0 "$child" 2>/dev/null && [ "$records_then" = "$records_later" ] &&
  grep -q "stopped with it" "$dir/err.log"; then
  ok "SIGTERM with a child run at another precision: the child stops too, and the parent says so"
else
  miss "SIGTERM with a child" "child ${child:-never seen}, exit $rc, records $records_then then $records_later: $(tail -1 "$dir/err.log")"
  [ -n "$child" ] && kill -9 "$child" 2>/dev/null
fi

echo "fault injection: $pass passed, $fail missed"
[ "$fail" -eq 0 ]
