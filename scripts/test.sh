#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, lint, types, then pytest (tests + doctests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check src tests benchmarks
# types: the whole package, strictly (pyproject [tool.mypy]), and the IR on its own (it must not need torch)
.venv/bin/mypy
.venv/bin/mypy --strict -p ncd.ir --cache-dir .mypy_cache/strict  # its own cache: the two runs' options differ
.venv/bin/python -m pytest -n 2 "$@"
