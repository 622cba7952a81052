#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine: the emoji font, a venv with the CPU torch wheel, progan.
# Usage: bash scripts/setup.sh [extras]   e.g. `bash scripts/setup.sh test` also installs the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"

apt_install() {  # apt_install PACKAGE... (root, or sudo when available)
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! command -v apt-get >/dev/null; then
        echo "setup: please install these system packages yourself: $*" >&2; return 1
    fi
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then
    echo "setup: installing the Noto Color Emoji font (fonts-noto-color-emoji)"
    apt_install fonts-noto-color-emoji
fi
if [[ ",$EXTRAS," == *",test,"* ]] && [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing Debian's chromium for the browser test"
    apt_install chromium
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
