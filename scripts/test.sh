#!/usr/bin/env bash
# Set up (including the test tools and Debian's chromium for the browser test), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Tiny models and several processes at once (DDP, the rehearsal, subprocess runs) on a couple of cores: one OpenMP
# thread per process avoids oversubscription, which made a busy 2-core machine ~8x slower (39 s vs > 300 s for the
# kill-and-resume test).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest tests -q "$@"
