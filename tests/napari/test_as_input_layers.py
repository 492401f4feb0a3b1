"""A napari layer object passed to the API where its data belongs works (the console's commonest slip)."""

import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_xrayseg import evaluate, make_phantom  # noqa: E402
from napari_xrayseg.core.io import as_input  # noqa: E402


def test_napari_layers_give_their_data(make_napari_viewer):
    image, truth = make_phantom((4, 32, 32), seed=3)
    viewer = make_napari_viewer()
    img = viewer.add_image(image)
    lab = viewer.add_labels(truth)
    pyr = viewer.add_image([image, image[:, ::2, ::2]], multiscale=True)
    assert as_input(img) is image and as_input(lab) is truth  # "image has 0 dimensions (shape ())" before
    assert as_input(pyr) is image  # a multiscale layer: its full resolution
    assert evaluate(lab, truth).mean_dice == 1.0
