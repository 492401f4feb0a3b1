#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite headless under Xvfb.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_API=pyqt6 MPLBACKEND=Agg PYTHONFAULTHANDLER=1
unset QT_QPA_PLATFORM  # "offscreen" gives napari no OpenGL context; Xvfb does
# a temporary folder of this run's own: runs at once on one machine shared /tmp/pytest-of-$USER, and one
# run's clean-up removed another's files mid-test (138 errors; QA)
base=$(mktemp -d "${TMPDIR:-/tmp}/xrayseg-test.XXXXXX")
set +e
xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest --no-xvfb -p no:cacheprovider \
  --basetemp "$base/pytest" "$@"
code=$?
set -e
rm -rf "$base"
if [ "$code" = "5" ]; then
  echo "[test] pytest collected no tests" >&2
  exit 1
fi
exit "$code"
