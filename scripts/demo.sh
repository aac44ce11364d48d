#!/usr/bin/env bash
# Set up, then run the main job: the offline demo on the shipped assets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m diffinv demo "$@"
