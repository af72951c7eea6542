#!/usr/bin/env bash
# Renders a report (report.md and its SVG figures) to one PNG of the whole page, as a markdown viewer
# shows it, in Debian's headless chromium — for a person to look at before a report is committed.
#
#   tests/render/report_png.sh reports/smoke/report.md /tmp/smoke.png [WIDTH]
#
# Needs `chromium` (apt-get install chromium; installed here if missing and we are root).
set -euo pipefail
md=${1:?usage: report_png.sh REPORT.md OUT.png [WIDTH]}
out=${2:?usage: report_png.sh REPORT.md OUT.png [WIDTH]}
width=${3:-1280}
[[ -f $md ]] || { echo "error: no such report: $md" >&2; exit 2; }
if ! command -v chromium >/dev/null; then
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "error: chromium is not installed (apt-get install chromium)" >&2; exit 2
  fi
fi
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$here" && cargo run --quiet --locked --release --example report_html -- "$(realpath "$md")" "$tmp/page.html")
browse() {
  # No sandbox: CI and this machine run as root; no GPU; the DBus complaints are harmless noise.
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=10000 "$@" \
    "file://$tmp/page.html" 2>"$tmp/chromium.log"
}
# First pass: the page's height once its figures have loaded (the page writes it into its title).
height=$(browse --window-size="$width,800" --dump-dom | grep -o '<title>height:[0-9]*' | grep -o '[0-9]*$' || true)
[[ -n $height ]] || { echo "error: the page did not report its height:" >&2; cat "$tmp/chromium.log" >&2; exit 1; }
browse --window-size="$width,$height" --screenshot="$(realpath -m "$out")" >/dev/null
[[ -s $out ]] || { echo "error: chromium wrote no screenshot:" >&2; cat "$tmp/chromium.log" >&2; exit 1; }
echo "wrote $out (${width}×${height} px)"
