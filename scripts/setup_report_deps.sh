#!/usr/bin/env bash
# System packages the report feature and its test need (docs/architecture.md, tests/test_report.py):
#   * a CJK font, so matplotlib can draw the Chinese chart labels (turned into SVG paths, so the HTML
#     itself needs no font on the viewer's machine);
#   * headless Chromium, which tests/test_report.py uses to render the report and check the screenshot.
# Both come from Debian packages. Idempotent: when everything is present it only runs two checks and
# exits, so `make test` can call it every time. `--font-only` (what `make demo` runs) skips the browser,
# which only the test needs.
set -euo pipefail
FONT_ONLY=0
[ "${1:-}" = "--font-only" ] && FONT_ONLY=1

FONT_PKG=fonts-wqy-microhei
FONT_FILE=/usr/share/fonts/truetype/wqy/wqy-microhei.ttc
BROWSER_PKG=chromium

need=()
[ -f "$FONT_FILE" ] || need+=("$FONT_PKG")
[ "$FONT_ONLY" = 1 ] || command -v chromium >/dev/null 2>&1 || need+=("$BROWSER_PKG")

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "setup_report_deps: need root (or sudo) to install: ${need[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_report_deps: no apt-get; install ${need[*]} (a CJK font and chromium) by hand" >&2
    exit 1
fi

echo "setup_report_deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 -qq)
# Update the package lists only when they cannot find what we need (a fresh image has none), and once
# more if the install fails on stale lists (a mirror no longer has the version they name).
if ! apt-cache show "${need[@]}" >/dev/null 2>&1; then
    "${APT[@]}" update
fi
if ! "${APT[@]}" install -y --no-install-recommends "${need[@]}" >/dev/null; then
    "${APT[@]}" update
    "${APT[@]}" install -y --no-install-recommends "${need[@]}" >/dev/null
fi
for pkg in "${need[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || { echo "setup_report_deps: $pkg did not install" >&2; exit 1; }
done
# matplotlib caches its font list; a stale cache would not see the new font.
rm -rf "${XDG_CACHE_HOME:-$HOME/.cache}"/matplotlib/fontlist-*.json 2>/dev/null || true
