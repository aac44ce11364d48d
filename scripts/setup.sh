#!/usr/bin/env bash
# Set up diffinv on a fresh machine: CPU torch first (a bare `torch` requirement would pull a
# multi-GB CUDA build), then the package itself in editable mode with its test and web-app extras,
# and Debian's chromium for the browser tests of the web app (tests/app/test_app_browser.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e ".[test,app]"
# The reference LPIPS implementation, for tests/test_lpips.py. Not in the test extra: its declared
# dependency on torchvision would pull a CUDA torch and a torchvision that does not import beside
# this torch. It is pure Python; the tests give it a stand-in torchvision (and skip without it).
"$PY" -m pip install --quiet --no-deps lpips==0.1.4
# A browser for the web app's tests: Playwright drives Debian's chromium (Playwright's own browser
# download is not reachable everywhere). Installed only when missing and where apt-get can run;
# otherwise the browser tests skip and say why (DIFFINV_REQUIRE_BROWSER=1 makes them fail instead).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    fi
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
        { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
            echo "setup.sh: warning: apt-get could not install chromium; the browser tests will skip" >&2
    else
        echo "setup.sh: warning: no chromium and no apt-get to install it; the browser tests will skip" >&2
    fi
fi
