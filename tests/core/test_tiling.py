import numpy as np
import pytest
import torch

from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.inference import SlicePredictor
from napari_xrayseg.core.models import init_model
from napari_xrayseg.core.tiling import (
    context_range,
    effective_tile,
    normalize_axis,
    plan_slab_depth,
    slab_ranges,
    slab_slicer,
    stack_context,
    windows_per_slice,
)


def test_slab_ranges_cover_exactly():
    for n in (1, 7, 16, 33):
        for d in (1, 4, 16, 40):
            r = slab_ranges(n, d)
            assert r[0][0] == 0 and r[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(r, r[1:]))
            assert all(0 < stop - start <= d for start, stop in r)


def test_slab_slicer_and_axis():
    assert slab_slicer(2, 3, 5, 3) == (slice(None), slice(None), slice(3, 5))
    assert normalize_axis(-1, 3) == 2
    with pytest.raises(InputError, match="axis 3 is out of range"):
        normalize_axis(3, 3)


def test_plan_slab_depth_follows_chunks_and_caps():
    assert plan_slab_depth((100, 64, 64), 0, (8, 64, 64), None) == 16  # whole chunks, at least the default
    assert plan_slab_depth((100, 64, 64), 0, (1, 64, 64), None, default=32) == 32  # was 1: 15x a 3D net's work
    assert plan_slab_depth((100, 64, 64), 0, (10, 64, 64), None, default=32) == 40
    assert plan_slab_depth((100, 64, 64), 0, (48, 64, 64), None, default=32) == 48
    assert plan_slab_depth((200, 64, 64), 0, (100, 64, 64), None) == 64
    assert plan_slab_depth((100, 64, 64), 0, None, None) == 16
    assert plan_slab_depth((5, 64, 64), 0, None, None) == 5
    assert plan_slab_depth((100, 64, 64), 0, None, 3) == 3
    # a float32 slab is capped to max_bytes
    assert plan_slab_depth((100, 4096, 4096), 0, (64, 64, 64), None, max_bytes=2**27) == 2


def test_effective_tile_shrinks_and_validates():
    assert effective_tile((100, 1000), 256, 16) == (112, 256)
    assert effective_tile((256, 256), 256, 16) == (256, 256)
    with pytest.raises(InputError, match="multiple of the network's stride 16"):
        effective_tile((64, 64), 250, 16)
    with pytest.raises(InputError, match="stride"):
        effective_tile((64, 64), 8, 16)


class _Identity(torch.nn.Module):
    """Outputs one-hot-like scores that reproduce the input's argmax exactly."""

    def __init__(self, n_classes):
        super().__init__()
        self.n = n_classes

    def forward(self, x):
        # x holds integer class indices 0..n-1 as floats; score = -(x - c)^2 peaks at c.
        c = torch.arange(self.n, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return -((x - c) ** 2)


@pytest.mark.parametrize("shape", [(3, 37, 53), (2, 64, 64), (1, 129, 31), (2, 5, 7)])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_tiling_round_trip_is_exact_for_odd_sizes(shape, blend):
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 3, shape).astype(np.float32)
    model = init_model("unet", size="tiny", classes=[4, 5, 6], tile=16)
    model.network = _Identity(3)
    pred = SlicePredictor(model, device="cpu", tile=16, overlap=0.5, batch=3, blend=blend)
    out = pred.labels(idx)
    np.testing.assert_array_equal(out, np.asarray([4, 5, 6], np.uint8)[idx.astype(int)])


def test_blending_weights_are_gaussian_and_average_overlaps():
    # A net that outputs a constant per window: the blended result stays that constant
    # everywhere (weights are normalised), including window seams and borders.
    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.ones(x.shape[0], 3, *x.shape[2:]) * torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1)

    model = init_model("unet", size="tiny", classes=3, tile=16)
    model.network = Const()
    pred = SlicePredictor(model, device="cpu", tile=16, overlap=0.5, batch=4)
    s = pred.scores(np.zeros((1, 40, 40), np.float32))
    np.testing.assert_allclose(s[0, 1].numpy(), 0.5, rtol=1e-5)

    from monai.data.utils import compute_importance_map

    w = compute_importance_map((16, 16), mode="gaussian", sigma_scale=0.125).numpy()
    assert w.shape == (16, 16)
    assert w[8, 8] == pytest.approx(w.max()) and w[0, 0] < 0.1 * w.max()


def test_windows_per_slice():
    assert windows_per_slice((256, 256), (256, 256), 0.25) == 1
    assert windows_per_slice((512, 512), (256, 256), 0.25) == 9


# --------------------------------------------------------------------------- context stacking


def test_stack_context_replicates_the_volume_ends():
    v = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    out = stack_context(v, 3)
    assert out.shape == (5, 3, 2, 3)
    for i, nb in enumerate([(0, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 4)]):
        np.testing.assert_array_equal(out[i], v[list(nb)])
    out5 = stack_context(v, 5)
    np.testing.assert_array_equal(out5[0], v[[0, 0, 0, 1, 2]])
    np.testing.assert_array_equal(out5[4], v[[2, 3, 4, 4, 4]])
    np.testing.assert_array_equal(stack_context(v, 1), v[:, None])
    # a slab in the middle with its halo: no replication, halo slices beyond k // 2 ignored
    mid = stack_context(v[2:3], 3, before=v[:2], after=v[3:])
    np.testing.assert_array_equal(mid[0], v[[1, 2, 3]])
    # a halo on one side only: the other side is a volume end
    np.testing.assert_array_equal(stack_context(v[3:], 3, before=v[:3])[:, :, 0, 0], v[[[2, 3, 4], [3, 4, 4]], 0, 0])
    # a single slice (2D input) sees only itself
    np.testing.assert_array_equal(stack_context(v[:1], 3)[0], v[[0, 0, 0]])
    for bad in (0, 2, -1, True):
        with pytest.raises(InputError, match="odd"):
            stack_context(v, bad)


def test_context_range_clips_the_halo():
    assert context_range(0, 4, 3, 10) == (0, 5)
    assert context_range(4, 8, 3, 10) == (3, 9)
    assert context_range(8, 10, 5, 10) == (6, 10)
    assert context_range(2, 3, 1, 10) == (2, 3)
