"""scripts/setup.sh chooses torch for the machine: CUDA on an NVIDIA box, a CPU build elsewhere.

Only its ``--dry-run`` is run here (it prints the plan and changes nothing), with fake
``nvidia-smi`` commands and pip find-links, so the shared venv is never rebuilt.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(tmp_path, *, gpu, wheels):
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    smi = fake / "nvidia-smi"  # a driver that answers (a GPU), or one that fails (no GPU)
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n" if gpu else "#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "XRAYSEG_TORCH"}
    env.update(PATH=f"{fake}:{os.environ['PATH']}", PIP_FIND_LINKS=str(wheels), PYTHON=sys.executable)
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh"), "--dry-run"], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def _fake_torch_wheel(folder):
    """A tiny valid wheel named like the local CPU build, so pip can find torch without an index."""
    folder.mkdir()
    name = "torch-2.13.0+cpu"
    with zipfile.ZipFile(folder / f"{name}-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}.dist-info/METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0+cpu\n")
        z.writestr(f"{name}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{name}.dist-info/RECORD", "")
    return folder


def test_gpu_machine_gets_a_cuda_torch(tmp_path):
    out = _dry_run(tmp_path, gpu=True, wheels=tmp_path / "none")
    assert "torch plan: cuda" in out and "download.pytorch.org" not in out


def test_cpu_machine_with_a_local_wheel_keeps_the_pinned_local_torch(tmp_path):
    out = _dry_run(tmp_path, gpu=False, wheels=_fake_torch_wheel(tmp_path / "wheels"))
    assert "torch plan: local-cpu" in out and "-c .ci/constraints.txt torch" in out


def test_cpu_machine_without_a_local_wheel_uses_the_cpu_index_never_cuda(tmp_path):
    out = _dry_run(tmp_path, gpu=False, wheels=tmp_path / "none")
    assert "torch plan: cpu-index" in out
    assert "--index-url https://download.pytorch.org/whl/cpu" in out


def test_requires_python_matches_zarr3():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.11"  # zarr 3 needs Python 3.11
