#!/usr/bin/env bash
# Screenshot the HTML report of a finished run with headless Chromium (for a visual check; tests do not use it).
#
#   scripts/screenshot_report.sh RUN_DIR [OUT_PNG] [HEIGHT]
#
# Writes OUT_PNG (default RUN_DIR/report.png): the page at 1400 px wide (the width the report is built and tested for), HEIGHT px tall (default 800:
# the first screen; use e.g. 6000 for most of the page). Rebuilds RUN_DIR/report.html first if it is missing.
# Needs Chromium (Debian/Ubuntu package `chromium`; set CHROMIUM to use another binary).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
    echo "usage: $0 RUN_DIR [OUT_PNG] [HEIGHT]" >&2
    exit 2
fi
run_dir=$(cd "$1" && pwd)
out=${2:-$run_dir/report.png}
height=${3:-800}
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [[ -z "$chromium" ]]; then
    echo "error: chromium not found (install the Debian package 'chromium', or set CHROMIUM)" >&2
    exit 1
fi
if [[ ! -f "$run_dir/report.html" ]]; then
    uv run sharedattr report "$run_dir" >/dev/null
fi
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
"$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking --hide-scrollbars \
    --window-size="1400,$height" --screenshot="$out" "file://$run_dir/report.html" 2>/dev/null
echo "$out"
