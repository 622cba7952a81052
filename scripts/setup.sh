#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine: the emoji font, a venv with torch 2.13.0, progan.
# Usage: bash scripts/setup.sh [extras]   e.g. `bash scripts/setup.sh test` also installs the test tools.
#
# Which torch: PROGAN_TORCH=auto (default) | cpu | cuda | cu126 | cu130 | cu132 | skip
#   auto   a CUDA build where `nvidia-smi -L` works, else the CPU build
#   cpu    the CPU build (~200 MB; a bare `pip install torch` on Linux would pull the multi-GB CUDA build)
#   cuda   the CUDA build that suits the first GPU: cu130 (CUDA 13.0, PyTorch's stable build of 2.13: Turing or newer
#          and an NVIDIA driver >= 580), else cu126 (CUDA 12.6: older GPUs down to Maxwell, drivers >= 525)
#   cu1xx  that build from download.pytorch.org/whl/cu1xx (cu132: CUDA 13.2, experimental in 2.13)
#   skip   keep whatever torch the venv has (or install your own first)
# A torch that is already the chosen build is left alone. PROGAN_SETUP_DRY_RUN=1 prints the commands instead.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
TORCH_VERSION=2.13.0
DRY_RUN="${PROGAN_SETUP_DRY_RUN:-}"

run() {  # run COMMAND...: the command, or only its echo in a dry run
    if [ -n "$DRY_RUN" ]; then echo "+ $*"; else "$@"; fi
}

apt_install() {  # apt_install PACKAGE... (root, or sudo when available)
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -n "$DRY_RUN" ]; then echo "+ $sudo apt-get install $*"; return; fi
    if ! command -v apt-get >/dev/null; then
        echo "setup: please install these system packages yourself: $*" >&2; return 1
    fi
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then
    echo "setup: installing the Noto Color Emoji font (fonts-noto-color-emoji)"
    apt_install fonts-noto-color-emoji
fi
if [ ! -f /usr/share/unicode/emoji/emoji-test.txt ]; then
    echo "setup: installing Unicode's emoji data (unicode-data: the emoji groups and subgroups)"
    apt_install unicode-data
fi
if [[ ",$EXTRAS," == *",test,"* ]] && [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing Debian's chromium for the browser test"
    apt_install chromium
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || run "$PY" -m venv .venv

cuda_build() {  # the CUDA build of torch 2.13 that suits the first GPU (see the top of this file)
    local driver cap
    driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)"
    cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1)"
    if [ "${driver%%.*}" -ge 580 ] 2>/dev/null && [ "${cap/./}" -ge 75 ] 2>/dev/null; then
        echo cu130
    else
        echo cu126
    fi
}

TORCH="${PROGAN_TORCH:-auto}"
if [ "$TORCH" = auto ]; then
    if nvidia-smi -L >/dev/null 2>&1; then TORCH=cuda; else TORCH=cpu; fi
fi
[ "$TORCH" = cuda ] && TORCH="$(cuda_build)"
case "$TORCH" in
    skip) echo "setup: torch left as it is (PROGAN_TORCH=skip)" ;;
    cpu|cu126|cu130|cu132)
        want="$TORCH_VERSION+$TORCH"
        have="$(.venv/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
        if [ "$have" = "$want" ]; then
            echo "setup: torch $have already installed"
        elif [ "$TORCH" = cpu ]; then
            echo "setup: installing torch $want, the CPU build (PROGAN_TORCH=cuda for a GPU build)"
            # A local wheel where pip has one (its find-links), else PyTorch's CPU index (with PyPI for the rest).
            run .venv/bin/pip install -q "torch==$want" 2>/dev/null \
                || run .venv/bin/pip install -q "torch==$want" --index-url https://download.pytorch.org/whl/cpu \
                       --extra-index-url https://pypi.org/simple
        else
            echo "setup: installing torch $want, the CUDA ${TORCH:2:2}.${TORCH:4} build, from" \
                 "https://download.pytorch.org/whl/$TORCH (nvidia-smi: $(nvidia-smi -L 2>/dev/null | head -n1 || true))"
            run .venv/bin/pip install -q "torch==$want" --index-url "https://download.pytorch.org/whl/$TORCH" \
                --extra-index-url https://pypi.org/simple
        fi ;;
    *) echo "setup: PROGAN_TORCH=$TORCH: expected auto, cpu, cuda, cu126, cu130, cu132 or skip" >&2; exit 2 ;;
esac
run .venv/bin/pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
