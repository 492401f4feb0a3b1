#!/usr/bin/env bash
# Set up everything napari-xrayseg needs on a fresh Debian machine (as root) or a
# developer box: the Debian libraries Qt/OpenGL need headless, a venv in .venv,
# a CPU torch (pinned via .ci/constraints.txt), and the project with its test extras.
# Re-runs reuse .venv while pyproject.toml and the constraints are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-glx0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-shm0 libxcb-sync1
  libxcb-xfixes0 libxcb-xkb1 libtcmalloc-minimal4"

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "[setup] warning: missing Debian packages (install them as root):$missing" >&2
  fi
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
# Key the venv on what decides its contents: dependencies, constraints, interpreter.
deps="$("$PY" -c 'import tomllib,json; p=tomllib.load(open("pyproject.toml","rb"))["project"]; print(json.dumps([p["dependencies"], p["optional-dependencies"]], sort_keys=True))')"
key="$( (echo "$deps"; cat .ci/constraints.txt; "$PY" --version) | sha256sum | cut -c1-16)"
if [ -f .venv/.xrayseg-key ] && [ "$(cat .venv/.xrayseg-key)" = "$key" ]; then
  echo "[setup] reusing .venv ($key)"
else
  echo "[setup] creating .venv with $PY"
  rm -rf .venv
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c .ci/constraints.txt "torch==2.13.0"
  .venv/bin/python -m pip install -q -c .ci/constraints.txt -e ".[dev]"
  # Guard: a CPU torch and no CUDA wheels (an unpinned torch pulls several GB).
  .venv/bin/python - <<'PYEOF'
import importlib.metadata as md, sys, torch
cuda = [d.metadata["Name"] for d in md.distributions() if (d.metadata["Name"] or "").startswith("nvidia-")]
if cuda:
    sys.exit(f"[setup] CUDA wheels were installed ({', '.join(cuda[:3])}...): pin torch with .ci/constraints.txt")
print(f"[setup] torch {torch.__version__}")
PYEOF
  echo "$key" > .venv/.xrayseg-key
fi
# The editable install is cheap; keep it current if the package moved.
.venv/bin/python -c "import napari_xrayseg" 2>/dev/null || .venv/bin/python -m pip install -q -c .ci/constraints.txt --no-deps -e .
