#!/usr/bin/env bash
# Install the system packages the text overlay (farm/output/overlay.py) needs.
#
#   * Noto fonts: Latin, Arabic, Hebrew, Thai, Devanagari (fonts-noto-core) and
#     Chinese (SC/TC), Japanese and Korean (fonts-noto-cjk, one .ttc collection).
#   * libfribidi0: Pillow's wheel bundles libraqm and HarfBuzz but dlopen()s
#     libfribidi.so.0 from the system at runtime; without it
#     PIL.features.check("raqm") is False and Arabic/Hebrew are not shaped.
#     libharfbuzz0b is listed too for Pillow builds that link the system HarfBuzz.
#   * chromium: the headless browser the campaign-page test (tests/farm/serve/
#     test_dashboard.py) drives through Playwright (Playwright's own browser
#     download is not needed). Without it that test is skipped.
#
# Idempotent: if everything is already present it does nothing. Not root: it uses
# sudo when sudo works without a password. Without root, sudo or apt-get it prints
# what to install and exits 0 (the overlay then raises a clear FontError naming this
# script).
set -euo pipefail

PACKAGES=(fonts-noto-core fonts-noto-cjk libfribidi0 libharfbuzz0b chromium)

# One representative file per package; `fc-list` is not needed (fontconfig may be absent).
REQUIRED_FILES=(
    /usr/share/fonts/truetype/noto/NotoSans-Regular.ttf
    /usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf
    /usr/share/fonts/truetype/noto/NotoSansHebrew-Regular.ttf
    /usr/share/fonts/truetype/noto/NotoSansThai-Regular.ttf
    /usr/share/fonts/truetype/noto/NotoSansDevanagari-Regular.ttf
    /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
)

have_fribidi() {
    if command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libfribidi\.so\.0'; then
        return 0
    fi
    compgen -G '/usr/lib/*/libfribidi.so.0' >/dev/null || compgen -G '/lib/*/libfribidi.so.0' >/dev/null
}

missing=()
for f in "${REQUIRED_FILES[@]}"; do
    [[ -e "$f" ]] || missing+=("$f")
done
have_fribidi || missing+=("libfribidi.so.0")
command -v chromium >/dev/null 2>&1 || missing+=("chromium")

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-deps: fonts, libfribidi and chromium already present; nothing to do."
    exit 0
fi

echo "install-system-deps: missing: ${missing[*]}"

SUDO=()
if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
fi

if { [[ "$(id -u)" -ne 0 ]] && [[ ${#SUDO[@]} -eq 0 ]]; } || ! command -v apt-get >/dev/null 2>&1; then
    cat >&2 <<MSG
install-system-deps: cannot install automatically (need root and apt-get).
Please install these Debian/Ubuntu packages by hand:
    sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}
or point FARM_FONT_DIR at a directory containing the Noto Sans fonts
(NotoSans, NotoSansArabic, NotoSansHebrew, NotoSansThai, NotoSansDevanagari,
NotoSansCJK-Regular.ttc) and install FriBiDi for right-to-left shaping;
chromium is only needed by the campaign-page browser test.
MSG
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"
echo "install-system-deps: installed ${PACKAGES[*]}"
