#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, lint, then pytest (tests + doctests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -n 2 "$@"
