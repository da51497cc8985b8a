#!/usr/bin/env bash
# The main job on a built-in default: render and analyse the gallery into ./out (or a folder given).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh runtime
.venv/bin/python -m ncd gallery --out "${1:-out}"
