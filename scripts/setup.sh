#!/usr/bin/env bash
# Set up diffinv on a fresh machine: CPU torch first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then the package itself in editable mode with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e ".[test]"
# The reference LPIPS implementation, for tests/test_lpips.py. Not in the test extra: its declared
# dependency on torchvision would pull a CUDA torch and a torchvision that does not import beside
# this torch. It is pure Python; the tests give it a stand-in torchvision (and skip without it).
"$PY" -m pip install --quiet --no-deps lpips==0.1.4
