#!/usr/bin/env bash
# Proves each vendored crate is the one published on crates.io but for the change docs/vendor.md
# explains: vendor/macerator (macerator 0.3.4) differs by one default-features line and a lints
# table in Cargo.toml; vendor/burn-autodiff (burn-autodiff 0.21.0) by exactly
# docs/patches/burn-autodiff-thread-scoped-sweep.patch. Each adds PATCHED.md and leaves out the
# published Cargo.lock. Fetches the published crates with cargo (crates.io).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/probe/src"
echo 'fn main() {}' > "$work/probe/src/main.rs"
printf '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nmacerator = "=0.3.4"\nburn-autodiff = "=0.21.0"\n' \
  > "$work/probe/Cargo.toml"
(cd "$work/probe" && cargo fetch --quiet)
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/macerator-0.3.4.crate | head -1)
tar -xzf "$crate" -C "$work"
published="$work/macerator-0.3.4"
vendored="$repo/vendor/macerator"

# Every file but the four named ones is byte for byte the published one.
if ! diff -r -x Cargo.toml -x PATCHED.md -x .cargo-ok -x Cargo.lock "$published" "$vendored"; then
  echo "vendor_patch: vendor/macerator differs from the published 0.3.4 beyond Cargo.toml" >&2
  exit 1
fi
[ -f "$vendored/PATCHED.md" ] || { echo "vendor_patch: PATCHED.md is missing" >&2; exit 1; }

# Cargo.toml: exactly the documented change.
expected=$(cat <<'DIFF'
36,39c36
< default = [
<     "std",
<     "avx512",
< ]
---
> default = ["std"]
106a104,108
> 
> # gram-bench: without `avx512` four reduce macros go unused; a path dependency's warnings would
> # otherwise show in every build of gram-bench.
> [lints.rust]
> unused = "allow"
DIFF
)
actual=$(diff "$published/Cargo.toml" "$vendored/Cargo.toml" || true)
if [ "$actual" != "$expected" ]; then
  echo "vendor_patch: vendor/macerator/Cargo.toml's change is not the documented one:" >&2
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  exit 1
fi
echo "vendor_patch: vendor/macerator = macerator 0.3.4 as published, but for the documented Cargo.toml change"

# burn-autodiff: the published crate with the documented patch applied is the vendored tree.
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/burn-autodiff-0.21.0.crate | head -1)
tar -xzf "$crate" -C "$work"
published="$work/burn-autodiff-0.21.0"
vendored="$repo/vendor/burn-autodiff"
patch --quiet -p1 -d "$published" < "$repo/docs/patches/burn-autodiff-thread-scoped-sweep.patch"
if ! diff -r -x PATCHED.md -x .cargo-ok -x Cargo.lock "$published" "$vendored"; then
  echo "vendor_patch: vendor/burn-autodiff is not the published 0.21.0 plus the documented patch" >&2
  exit 1
fi
[ -f "$vendored/PATCHED.md" ] || { echo "vendor_patch: burn-autodiff's PATCHED.md is missing" >&2; exit 1; }
echo "vendor_patch: vendor/burn-autodiff = burn-autodiff 0.21.0 as published, plus docs/patches/burn-autodiff-thread-scoped-sweep.patch"
