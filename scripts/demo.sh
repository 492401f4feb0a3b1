#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on the built-in sample data:
# generate the synthetic PXCT tomogram, annotate 3 slices, train, segment, evaluate.
# Extra arguments go to `xrayseg demo`, e.g. `bash scripts/demo.sh --minutes 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/xrayseg demo --out xrayseg-demo --overwrite "$@"
