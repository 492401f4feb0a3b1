"""What scientists pass instead of an array (a napari layer, a torch tensor, a path, a pyramid) works or says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_xrayseg import analyze, evaluate, init_model, make_phantom, segment
from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.io import as_input


def test_tensors_paths_and_pyramids():
    image, truth = make_phantom((4, 32, 32), seed=3)
    model = init_model("unet", size="tiny", classes=3, tile=32)
    ref = segment(image, model, device="cpu")
    # a tensor ("Cannot interpret 'torch.float32' as a data type" before)
    np.testing.assert_array_equal(segment(torch.from_numpy(image), model, device="cpu"), ref)
    assert evaluate(torch.from_numpy(ref), truth).mean_dice == evaluate(ref, truth).mean_dice
    assert analyze(torch.from_numpy(truth), tortuosity=False).phases == analyze(truth, tortuosity=False).phases
    # a list of a pyramid's levels: one line naming the fix (numpy's "inhomogeneous shape" before)
    with pytest.raises(InputError, match=r"list of arrays of 2 shapes .*pass one array, e\.g\. the full resolution"):
        segment([image, image[:, ::2, ::2]], model, device="cpu")
    assert as_input(image) is image
