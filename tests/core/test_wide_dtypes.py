"""Grey levels that float32 cannot keep apart (large offsets in float64 or 32/64-bit integers) keep their contrast.

QA (data as beamlines write it): the grey levels were narrowed to float32 before the offset came off, so a
float64 scan stored on an offset of 1e7 kept 2 of its 4096 grey levels per slice (mean Dice 0.55 instead of
0.94), and subnormal float32 grey levels overflowed the scale (Dice 0.15).
"""

import numpy as np
import pytest

from napari_xrayseg import init_model, segment
from napari_xrayseg.core.normalize import apply_normalization, compute_normalization, mark_missing, working_dtype
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.training import _annotated_slices


@pytest.fixture(scope="module")
def grey():
    img, _ = make_phantom((6, 48, 48), seed=1372, artefacts=False)
    return (img - img.min()) / (img.max() - img.min())  # float32 in [0, 1]


def _levels(u):
    return np.round(u.astype(np.float64) * 4000)  # 4000 grey levels, exact in every dtype below


@pytest.mark.parametrize(
    "make",
    [
        lambda v: v + 1e7,  # float64 on an offset
        lambda v: (v + 4_000_000_000 - 4000).astype(np.uint32),  # near the top of uint32
        lambda v: (v + 10**12).astype(np.int64),  # a pedestal in int64
        lambda v: (v - 2**31 + 5000).astype(np.int32),
    ],
    ids=["float64+1e7", "uint32", "int64", "int32"],
)
def test_offset_grey_levels_normalise_as_without_the_offset(grey, make):
    base = _levels(grey)
    wide = make(base)
    assert working_dtype(wide.dtype) == np.float64
    got = apply_normalization(wide, compute_normalization(wide))
    want = apply_normalization(base.astype(np.float32), compute_normalization(base.astype(np.float32)))
    assert got.dtype == np.float32
    assert np.unique(got).size == np.unique(want).size  # every grey level kept (2 of 4096 before)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_subnormal_grey_levels_are_scaled_in_float64(grey):
    tiny = (grey * np.float32(1e-40)).astype(np.float32)  # float32 subnormals: 1 / (high - low) overflows float32
    assert tiny.max() > 0
    got = apply_normalization(tiny, compute_normalization(tiny))
    want = apply_normalization(grey, compute_normalization(grey))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-3)  # subnormals hold a few significant bits fewer


def test_segment_and_training_inputs_keep_the_offset_contrast(grey):
    model = init_model("unet", size="tiny", classes=3, context=3, seed=0)
    base = _levels(grey).astype(np.float32)
    wide = _levels(grey) + 1e7
    want = np.asarray(segment(base, model, device="cpu"))
    got = np.asarray(segment(wide, model, device="cpu"))
    assert (got == want).mean() > 0.999  # 0.63 of the voxels agreed before
    nodata = np.asarray(segment(wide, model, device="cpu", nodata=1e7))  # through the no-data view too
    inside = base != 0
    assert (nodata[inside] == want[inside]).mean() > 0.99
    assert mark_missing(wide, 1e7)[0].dtype == np.float64
    ann = np.zeros(grey.shape, np.uint8)
    ann[2] = 1
    _, x, _ = _annotated_slices(wide, ann, 0, False, None, context=3)
    assert x.dtype == np.float64 and np.unique(x[0, 1]).size == np.unique(wide[2]).size  # narrowed after


def test_a_complex_image_is_refused_with_the_way_to_its_phase(tmp_path):
    """QA: an HDF5 file holding one complex volume (a ptychographic object) said it held "none of them an
    image (2D or 3D)"; every format now names the complex type and the way to its phase or amplitude."""
    import h5py

    from napari_xrayseg.core.errors import InputError
    from napari_xrayseg.core.io import open_volume

    obj = np.ones((3, 8, 8), np.complex64)
    with h5py.File(tmp_path / "obj.h5", "w") as f:
        f["entry/object"] = obj
    with pytest.raises(InputError, match=r"obj.h5:/entry/object has dtype complex64: .*numpy.angle"):
        open_volume(tmp_path / "obj.h5")
    with pytest.raises(InputError, match=r"image has dtype complex64: .*numpy.abs"):
        segment(obj, init_model("unet", size="tiny", classes=3, seed=0), device="cpu")
