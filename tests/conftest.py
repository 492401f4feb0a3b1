import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("QT_API", "pyqt6")

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    from napari_xrayseg.core import said

    np.random.seed(0)
    torch.manual_seed(0)
    said.forget()  # warnings said once a run: each test starts as a fresh process would


@pytest.fixture
def tiny_model():
    from napari_xrayseg.core.models import init_model

    return init_model("unet", size="tiny", classes=3, tile=32, seed=0)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return rng.random((7, 45, 61), dtype=np.float32)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


def pytest_runtest_setup(item):
    # @pytest.mark.needs("taufactor"): the test runs what an optional extra provides, so an
    # install without that extra skips it instead of failing (CI installs every extra)
    for mark in item.iter_markers("needs"):
        for module in mark.args:
            pytest.importorskip(module, reason=f"needs {module} (an optional extra)")
