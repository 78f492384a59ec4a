#!/usr/bin/env bash
# Sets up a project-local .venv with everything clood needs.
#   bash scripts/setup.sh         runtime only
#   bash scripts/setup.sh --dev   plus pytest, tensorboard, and Chromium (the report test renders in it)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=".venv/bin/pip"
"$pip" install -q --upgrade pip
# torch first, so the requirement below is already met: a CPU build (2.13.0) where one is at hand;
# on a GPU machine, install your CUDA build of torch into .venv before running this script.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "$pip" install -q "torch==2.13.0" || "$pip" install -q torch
fi
if [ "$dev" = 1 ]; then "$pip" install -q -e ".[dev]"; else "$pip" install -q -e .; fi
# The real CLIP BPE vocabulary ships inside open-clip-torch's wheel: the tiny offline base uses it
# so token counts are real. --no-deps keeps torchvision (and a second torch) out.
.venv/bin/python -c "import open_clip" 2>/dev/null || "$pip" install -q --no-deps open-clip-torch
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; the report's browser test will be skipped" >&2
  else
    echo "setup: chromium not found; install it for the report's browser test" >&2
  fi
fi
echo "setup: done (.venv)"
