#!/usr/bin/env bash
# Renders the lab's HTML report (steadfast-lab --html FILE) headless to PNG with the
# distribution's Chromium, and fails when the page is broken: Chromium missing or failing, the
# report carrying an error marker (class="plot-error", written when a plot has no data) or a
# plot without a data series, or the screenshot missing or blank.
#
#   scripts/render-report.sh REPORT.html [OUT.png] [WIDTH]
#
# OUT.png defaults to REPORT.png next to the report, WIDTH to 1400. The height is the page's
# (estimated from its plots, then the blank bottom is trimmed when ImageMagick is present).
# Chromium comes from scripts/install-tools.sh (apt-get install chromium).
set -euo pipefail

html="${1:?usage: scripts/render-report.sh REPORT.html [OUT.png] [WIDTH]}"
png="${2:-${html%.html}.png}"
width="${3:-1400}"

fail() { echo "render-report: FAILED: $*" >&2; exit 1; }

[ -s "$html" ] || fail "$html is missing or empty"
browser=""
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then browser="$b"; break; fi
done
[ -n "$browser" ] || fail "chromium not found (scripts/install-tools.sh installs it)"

# The page itself: complete, no error marker, every plot with a series, nothing from elsewhere.
grep -q '</html>' "$html" || fail "$html is truncated (no </html>)"
if grep -q 'class="plot-error"' "$html"; then
  grep -o 'data-error="[^"]*"' "$html" | sed 's/^/  /' >&2
  fail "$html carries error markers"
fi
plots=$(grep -o '<svg class="plot"' "$html" | wc -l)
series=$(grep -o 'class="series"' "$html" | wc -l)
[ "$plots" -gt 0 ] || fail "$html has no plot"
[ "$series" -ge "$plots" ] || fail "$html has $plots plots but only $series data series"
if grep -qE '<script|src=|href="https?:' "$html"; then
  fail "$html is not self-contained (a script or a resource from elsewhere)"
fi

# Headless Chromium captures the window, not the page: the report says how tall it lays out.
height=$(grep -o 'name="steadfast-report-height" content="[0-9]*"' "$html" | grep -o '[0-9][0-9]*' || true)
[ -n "$height" ] || height=$(( 1200 + plots * 200 ))
[ "$height" -le 30000 ] || height=30000
abs_html="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
rm -f "$png"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# --user-data-dir: a fresh profile (no first-run state, no lock left by another run).
timeout 120 "$browser" --headless --disable-gpu --no-sandbox --hide-scrollbars \
  --user-data-dir="$profile" --screenshot="$png" --window-size="$width,$height" \
  "file://$abs_html" >"$profile/chromium.log" 2>&1 || {
  tail -n 20 "$profile/chromium.log" >&2
  fail "chromium exited with an error"
}
[ -s "$png" ] || { tail -n 20 "$profile/chromium.log" >&2; fail "no screenshot written to $png"; }

# Blank: a page that did not render is one colour, and its image data compresses to nearly
# nothing. With python3 (standard library only) the PNG's pixel rows are decoded and their
# distinct byte values counted; without it, a page of text and plots must weigh more than a
# blank one (a few KB).
size=$(wc -c <"$png")
if command -v python3 >/dev/null 2>&1; then
  python3 - "$png" <<'PY' || fail "$png is blank or not a PNG"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit("not a PNG")
pos, idat = 8, b""
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IDAT":
        idat += data[pos + 8:pos + 8 + length]
    pos += 12 + length
raw = zlib.decompress(idat)
distinct = len(set(raw[::7]))
if distinct < 24:
    sys.exit(f"only {distinct} distinct byte values in the image data")
PY
else
  [ "$size" -gt 30000 ] || fail "$png looks blank ($size bytes)"
fi
echo "render-report: $png ($(wc -c <"$png") bytes) from $html: $plots plots, $series series"
