#!/usr/bin/env bash
# Creates .venv in the checkout and installs pinned dependencies (torch first: the CPU build).
# Usage: scripts/setup.sh [runtime|test|bench]
set -euo pipefail
cd "$(dirname "$0")/.."
level="${1:-runtime}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.ncd-installed-$level-$(cat pyproject.toml requirements/*.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "requirements/$level.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  touch "$stamp"
fi
if [ "$level" != "runtime" ]; then
  # System packages for the browser tests (Chromium), TikZ tests (pdflatex) and PNG/PDF output (cairo).
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v pdflatex >/dev/null 2>&1 || need+=(texlive-latex-base texlive-pictures texlive-latex-extra lmodern)
  [ -e /usr/share/fonts/truetype/cmu/cmunss.ttf ] || need+=(fonts-cmu)
  ldconfig -p 2>/dev/null | grep -q libcairo.so.2 || need+=(libcairo2)
  # the benchmarks' baseline (torchview) renders through Graphviz's dot
  if [ "$level" = "bench" ]; then command -v dot >/dev/null 2>&1 || need+=(graphviz); fi
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q >/dev/null
      apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    else
      echo "setup: please install these Debian packages: ${need[*]}" >&2
    fi
  fi
fi
