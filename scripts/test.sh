#!/usr/bin/env bash
# Set up (including the test tools and Debian's chromium for the browser test), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest tests -q "$@"
