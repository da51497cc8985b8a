#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, lint, types, then pytest (tests + doctests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check src tests benchmarks
# the IR is typed strictly (pyproject [tool.mypy]); the rest of the package is not yet clean (docs/internals.md)
.venv/bin/mypy --strict -p ncd.ir
.venv/bin/python -m pytest -n 2 "$@"
