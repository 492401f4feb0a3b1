"""Dense 3D supervision (``training.DENSE_CONTEXT``, off by default): a volumetric network scored on every
annotated slice it computes, not only the middle one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_xrayseg.core.training as training
from napari_xrayseg.core.models import init_model
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.training import _context_rows, _PatchSampler, _SupervisedStep, make_loss, train


def test_context_rows_point_at_annotated_training_neighbours_only():
    # slices 3, 4, 5 and 9 of input 0, slice 4 of input 1; slice 5 is held out for validation
    ids = [(0, 3), (0, 4), (0, 5), (0, 9), (1, 4)]
    train_rows = np.array([True, True, False, True, True, True])  # the last row: another axis
    rows = _context_rows(ids, train_rows, 5)
    assert rows.shape == (5, 5)  # the training rows: 0:(0,3) 1:(0,4) 2:(0,9) 3:(1,4) 4:other axis
    np.testing.assert_array_equal(
        rows,
        [
            [-1, -1, 0, 1, -1],  # slice 3: itself and slice 4; slice 5 is held out, never a target
            [-1, 0, 1, -1, -1],  # slice 4: slice 3 and itself
            [-1, -1, 2, -1, -1],  # slice 9 alone
            [-1, -1, 3, -1, -1],  # input 1's slice 4: not input 0's neighbours
            [-1, -1, 4, -1, -1],  # a row along another axis has only itself
        ],
    )
    # sparse annotations (no annotated neighbour within the context): nothing to add
    assert _context_rows([(0, 3), (0, 12), (0, 24)], np.ones(3, bool), 15) is None


def test_sampler_stacks_the_targets_of_the_context_slices():
    # each row's image is its index, each row's target one class: a crop tells which row it is
    images = np.broadcast_to(np.arange(3, dtype=np.float32)[:, None, None, None], (3, 3, 16, 16)).copy()
    cls = np.array([0, 1, 0])
    targets = np.broadcast_to(cls[:, None, None], (3, 16, 16)).astype(np.int16)
    rows = np.array([[-1, 0, 1], [0, 1, 2], [1, 2, -1]], np.int32)
    s = _PatchSampler(images, targets, 2, 16, augment=False, seed=0, context_rows=rows)
    drawn = set()
    for _ in range(12):
        img, tgt = s.sample()
        assert img.shape == (3, 16, 16) and tgt.shape == (3, 16, 16) and tgt.dtype == np.int64
        r = int(img[0, 0, 0])
        drawn.add(r)
        for j in range(3):
            np.testing.assert_array_equal(tgt[j], -1 if rows[r, j] < 0 else cls[rows[r, j]])
    assert drawn == {0, 1, 2}
    # augmented, every slice's target turns with its image: a rot90 or flip of both alike
    s = _PatchSampler(images, targets, 2, 16, augment=True, seed=1, context_rows=rows)
    x, y = s.batch(4)
    assert tuple(x.shape) == (4, 3, 16, 16) and tuple(y.shape) == (4, 3, 16, 16)
    assert set(np.unique(y.numpy())) <= {-1, 0, 1}


def test_a_step_learns_from_annotated_context_slices_the_middle_one_lacks():
    """Only a neighbour of the middle slice is annotated: a dense step has a loss and moves the
    weights; the middle-slice step has nothing to learn from."""
    net = init_model("unet3d", size="tiny", classes=2, context=5, seed=0).network
    net.generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 5, 16, 16)
    y = torch.full((2, 5, 16, 16), -1, dtype=torch.int64)
    y[:, 2] = -1  # the middle slice: not annotated
    y[:, 1:4:2] = torch.randint(0, 2, (2, 2, 16, 16))  # both of its neighbours are (always in the sub-volume)
    step = _SupervisedStep(net, make_loss("ce"), 1e-2, torch.device("cpu"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step.train()
    assert step(x, y[:, 2])["loss"] == 0.0  # the middle slice alone: nothing annotated
    weights = [k for k, v in net.state_dict().items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(before[k], net.state_dict()[k]) for k in weights)
    loss = step(x, y)["loss"]
    assert loss > 0.1
    assert any(not torch.equal(before[k], net.state_dict()[k]) for k in weights)
    # the scores compared with the targets are the sub-volume's, slice by slice
    net.generator = torch.Generator().manual_seed(5)
    scores, targets = step._dense(x, y)
    net.generator = torch.Generator().manual_seed(5)
    vol, lo = net.forward_dense(x)
    d = vol.shape[2]
    assert 3 <= d <= 5 and lo <= 2 < lo + d
    torch.testing.assert_close(scores, vol.permute(0, 2, 1, 3, 4).reshape(-1, 2, 16, 16))
    torch.testing.assert_close(targets, y[:, lo : lo + d].reshape(-1, 16, 16))


def test_a_dense_margin_leaves_out_the_ends_of_the_sub_volume_but_never_its_middle(monkeypatch):
    monkeypatch.setattr(training, "DENSE_MARGIN", 2)
    net = init_model("unet3d", size="tiny", classes=2, context=7, seed=0).network.train()
    step = _SupervisedStep(net, make_loss("ce"), 1e-2, torch.device("cpu"))
    x = torch.rand(1, 7, 8, 8)
    y = torch.randint(0, 2, (1, 7, 8, 8))
    seen = set()
    for seed in range(16):
        net.generator = torch.Generator().manual_seed(seed)
        _, targets = step._dense(x, y)
        net.generator = torch.Generator().manual_seed(seed)
        _, lo = net.forward_dense(x)
        d = targets.shape[0]
        scored = [j for j in range(d) if bool((targets[j] >= 0).any())]
        m = min(2, (d - 1) // 2)  # a shallow sub-volume keeps at least its central slices
        assert scored == sorted({*range(m, d - m), 3 - lo}), (d, lo, scored)
        seen.add((d, lo))
    assert len(seen) >= 4


@pytest.fixture(scope="module")
def volume():
    return make_phantom((20, 32, 32), seed=1, artefacts=False)


def test_train_scores_every_annotated_slice_of_a_fully_labelled_volume_when_asked(volume, monkeypatch):
    image, truth = volume
    kw = dict(arch="unet3d", size="tiny", context=5, epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu")
    middle = train(image, truth, **kw)  # the default: each row's middle slice alone
    assert middle.info.train["dense_rows"] == 0
    monkeypatch.setattr(training, "DENSE_CONTEXT", True)
    dense = train(image, truth, **kw)
    # validation holds out whole slices; the other 16 each have annotated neighbours
    assert dense.info.train["dense_rows"] == 20 - len(dense.info.train["val_slices"])
    sparse = np.zeros_like(truth)
    sparse[[5, 14]] = truth[[5, 14]]
    assert train(image, sparse, **kw).info.train["dense_rows"] == 0  # no annotated neighbour: as before
    # the same seed, the same model; the middle slice alone gives another
    again = train(image, truth, **kw)
    a, b, c = (m.network.state_dict() for m in (dense, again, middle))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # 2D networks have one output slice: nothing changes for them
    assert train(image, truth, **{**kw, "arch": "unet", "context": 3}).info.train["dense_rows"] == 0
