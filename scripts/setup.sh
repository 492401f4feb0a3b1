#!/usr/bin/env bash
# Set up everything napari-xrayseg needs on a fresh Debian machine (as root) or a
# developer box: the Debian libraries Qt/OpenGL need headless, a venv in .venv,
# torch, and the project with its test extras (napari + PyQt6, bioimageio.core for `xrayseg export`, ...).
# Re-runs reuse .venv while pyproject.toml, the constraints and the torch plan are unchanged.
#
# Which torch (decided by choose_torch below, printed as "[setup] torch plan: ..."):
#   cuda       an NVIDIA GPU answers `nvidia-smi`: torch from PyPI, whose Linux wheels are
#              CUDA builds (several GB of nvidia-* wheels, on purpose there).
#   local-cpu  no GPU, and pip finds torch==2.13.0 without an index (a local wheel in its
#              find-links, as on our development machines): that, pinned by .ci/constraints.txt.
#   cpu-index  no GPU and no local wheel: the CPU build from the PyTorch CPU index
#              (https://download.pytorch.org/whl/cpu), never CUDA wheels.
# XRAYSEG_TORCH=cuda|local-cpu|cpu-index forces a plan.
#
#   bash scripts/setup.sh             # set up (or reuse) .venv
#   bash scripts/setup.sh --dry-run   # print the plan and the commands; change nothing
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
CPU_INDEX="https://download.pytorch.org/whl/cpu"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

choose_torch() {
  if [ -n "${XRAYSEG_TORCH:-}" ]; then
    echo "$XRAYSEG_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo cuda
  elif "$PY" -m pip install --dry-run --ignore-installed --no-index --no-deps -q -c .ci/constraints.txt torch >/dev/null 2>&1; then
    echo local-cpu
  else
    echo cpu-index
  fi
}

TORCH_PLAN="$(choose_torch)"
case "$TORCH_PLAN" in
  cuda) TORCH_CMD=(-m pip install -q "torch>=2.8") ;;
  local-cpu) TORCH_CMD=(-m pip install -q -c .ci/constraints.txt torch) ;;
  cpu-index) TORCH_CMD=(-m pip install -q --index-url "$CPU_INDEX" "torch>=2.8") ;;
  *) echo "[setup] XRAYSEG_TORCH=$TORCH_PLAN: use cuda, local-cpu or cpu-index" >&2; exit 2 ;;
esac
echo "[setup] torch plan: $TORCH_PLAN"
if [ "$DRY" = 1 ]; then
  echo "[setup] dry run: .venv/bin/python ${TORCH_CMD[*]}"
  echo "[setup] dry run: .venv/bin/python -m pip install -q -c <torch as installed> -e .[dev]"
  exit 0
fi

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

# Key the venv on what decides its contents: dependencies, constraints, interpreter.
deps="$("$PY" -c 'import tomllib,json; p=tomllib.load(open("pyproject.toml","rb"))["project"]; print(json.dumps([p["dependencies"], p["optional-dependencies"]], sort_keys=True))')"
key="$( (echo "$deps"; cat .ci/constraints.txt; "$PY" --version; echo "$TORCH_PLAN") | sha256sum | cut -c1-16)"
if [ -f .venv/.xrayseg-key ] && [ "$(cat .venv/.xrayseg-key)" = "$key" ]; then
  echo "[setup] reusing .venv ($key)"
else
  echo "[setup] creating .venv with $PY"
  rm -rf .venv
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python "${TORCH_CMD[@]}"
  # The project's own install keeps the torch just installed (an unpinned torch would pull a CUDA build).
  pins="$(mktemp)"
  cat .ci/constraints.txt > "$pins"
  [ "$TORCH_PLAN" = local-cpu ] || .venv/bin/python -c 'import torch; print("torch==" + torch.__version__)' > "$pins"
  .venv/bin/python -m pip install -q -c "$pins" -e ".[dev]"
  rm -f "$pins"
  # Guard: on CPU plans a CPU torch and no CUDA wheels; on a GPU machine a torch that sees it.
  XRAYSEG_TORCH_PLAN="$TORCH_PLAN" .venv/bin/python - <<'PYEOF'
import importlib.metadata as md, os, sys, torch
plan = os.environ["XRAYSEG_TORCH_PLAN"]
cuda = [d.metadata["Name"] for d in md.distributions() if (d.metadata["Name"] or "").startswith("nvidia-")]
if plan != "cuda" and cuda:
    sys.exit(f"[setup] CUDA wheels were installed ({', '.join(cuda[:3])}...) on a CPU machine: pin torch")
if plan == "cuda" and not torch.cuda.is_available():
    print(f"[setup] warning: torch {torch.__version__} does not see the GPU (driver too old?)", file=sys.stderr)
print(f"[setup] torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})")
import bioimageio.core  # the [bioimageio] extra (via [test]): the model-exchange tests need it
print(f"[setup] bioimageio.core {md.version('bioimageio.core')}, pydantic {md.version('pydantic')}")
PYEOF
  echo "$key" > .venv/.xrayseg-key
fi
# The editable install is cheap; keep it current if the package moved.
.venv/bin/python -c "import napari_xrayseg" 2>/dev/null || .venv/bin/python -m pip install -q -c .ci/constraints.txt --no-deps -e .
