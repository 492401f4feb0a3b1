"""Self-training: pseudo-labels from a confident orthoplane ensemble, then fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xrayseg import Cancelled, CancelToken, InputError, init_model, save_model, self_train, train
from napari_xrayseg.core.sample import make_phantom
from napari_xrayseg.core.selftrain import _region, pseudo_labels

FAST = dict(size="tiny", steps_per_epoch=2, batch=2, patch=32, device="cpu", context=1)


@pytest.fixture(scope="module")
def trained():
    image, truth = make_phantom((8, 48, 48), seed=3, artefacts=False)
    sparse = np.zeros_like(truth)
    sparse[[2, 5]] = truth[[2, 5]]
    return image, truth, sparse, train(image, sparse, epochs=4, lr=1e-2, **dict(FAST, steps_per_epoch=4))


def test_pseudo_labels_keep_confident_voxels_of_chosen_slices_and_user_labels_win():
    lab = np.full((6, 4, 4), 2, np.uint8)
    conf = np.full((6, 4, 4), 0.95, np.float32)
    conf[:, 0, 0] = 0.4  # unsure everywhere at one pixel
    user = np.zeros_like(lab)
    user[0, 1, 1] = 3
    out = pseudo_labels(lab, conf, threshold=0.9, slices=2, axis=0, annotations=user)
    assert sorted(np.flatnonzero(out.reshape(6, -1).any(1)).tolist()) == [0, 2, 3]  # slices 2, 3 + the user's
    assert out[2, 0, 0] == 0 and out[2, 1, 1] == 2 and out[0, 1, 1] == 3
    assert int((out > 0).sum()) == 2 * 15 + 1
    along_x = pseudo_labels(lab, conf, threshold=0.9, slices=1, axis=2)
    assert along_x[:, :, 1:3].any() and not along_x[:, :, [0, 3]].any()


def test_region_bounds_memory():
    assert _region((10, 20, 30), 10**6) == (slice(0, 10), slice(0, 20), slice(0, 30))
    r = _region((400, 400, 400), 1 << 20)
    sizes = [s.stop - s.start for s in r]
    assert np.prod(sizes) <= 1 << 20 and all(s.start == (400 - k) // 2 for s, k in zip(r, sizes))


def test_self_train_fine_tunes_a_copy_and_records_it(trained):
    image, truth, sparse, model = trained
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    adapted = self_train(image, model, sparse, slices=3, threshold=0.34, epochs=1, device="cpu", seed=1)
    st = adapted.info.train["self_training"]
    assert st["slices"] == 3 and 0 < st["pseudo_fraction"] <= 1 and st["user_labels"]
    # the user's slices scored every blend (held out of the fine-tuning), the best within the margin kept
    scores = {float(a): v for a, v in st["label_blend"].items()}
    assert sorted(scores) == [0.0, 0.3, 0.5, 0.7, 1.0] and all(v is not None for v in scores.values())
    kept = st["label_blend_kept"]
    assert scores[kept] >= max(scores.values()) - 0.001 and st["label_dice"] == scores[kept]
    assert st["label_dice_before"] == scores[0.0]
    val, which = adapted.info.validation
    assert val == scores[kept] and which.endswith("on your annotated slices (held out of the self-training)")
    assert adapted.info.classes == model.info.classes and adapted.info.context == model.info.context
    for k, v in model.network.state_dict().items():  # the given model is untouched
        assert np.array_equal(v.numpy(), before[k].numpy())
    changed = any(not np.array_equal(v.numpy(), before[k].numpy()) for k, v in adapted.network.state_dict().items())
    assert changed == (kept > 0)


def test_self_training_that_harms_is_not_kept_when_labels_can_tell(trained, monkeypatch):
    """A strong model self-trained into a worse one (a QA run: -0.019 Dice) with nothing to notice: the
    user's annotations, held out, score it, and the model as it was wins over damage."""
    from napari_xrayseg.core import training

    image, truth, sparse, model = trained

    def harmful(*args, init, **kwargs):  # "fine-tuning" that destroys the network
        yield from ()
        broken = init_model("unet", size="tiny", classes=3, seed=5)
        broken.info = init.info
        return broken

    monkeypatch.setattr(training, "iter_train", harmful)
    adapted = self_train(image, model, sparse, slices=3, threshold=0.34, epochs=1, device="cpu")
    st = adapted.info.train["self_training"]
    assert st["label_blend_kept"] == 0.0 and st["label_blend"]["1"] < st["label_blend"]["0"]
    for k, v in model.network.state_dict().items():
        assert np.array_equal(v.numpy(), adapted.network.state_dict()[k].numpy())  # the model as it was
    assert adapted.info.validation[1].startswith("the model as it was, on your annotated slices")


def test_self_train_without_labels_learns_from_its_own_predictions(trained):
    image, truth, _, model = trained
    adapted = self_train(image, model, slices=6, threshold=0.34, epochs=1, device="cpu")
    st = adapted.info.train["self_training"]
    assert not st["user_labels"] and st["pseudo_fraction"] > 0.05


def test_self_train_refuses_untrained_and_bad_settings_and_cancels(trained, tmp_path):
    image, _, sparse, model = trained
    with pytest.raises(InputError, match="untrained"):
        self_train(image, init_model("unet", size="tiny"), device="cpu")
    with pytest.raises(InputError, match=r"threshold 1.5 must be in \(0, 1\)"):
        self_train(image, model, threshold=1.5, device="cpu")
    with pytest.raises(InputError, match="labels shape"):
        self_train(image, model, sparse[:4], device="cpu")
    seven = sparse.copy()
    seven[seven == 3] = 7  # QA: mixed into the pseudo-labels, scored under the wrong classes, exit 0
    with pytest.raises(InputError, match=r"labels hold values \[7\] that are not classes of the model \[1, 2, 3\]"):
        self_train(image, model, seven, device="cpu")
    with pytest.raises(InputError, match="is the input"):  # the model file replaced by its own fine-tuning
        self_train(image, save_model(model, tmp_path / "m.safetensors"), out=tmp_path / "m.safetensors", overwrite=True)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        self_train(image, model, sparse, epochs=1, device="cpu", cancel=token)


def test_self_train_keeps_the_batch_trained_with_else_the_architectures_default(trained):
    """The first training's batch carries over; a model that recorded none (an older or foreign
    file) gets its architecture's default (4 for unet3d), not the 2D networks' 8."""
    image, _, _, model = trained
    assert self_train(image, model, slices=2, threshold=0.34, epochs=1, device="cpu").info.train["batch"] == 2
    image, _, sparse, _ = trained
    m3 = train(image, sparse, arch="unet3d", epochs=1, **dict(FAST, context=3))
    del m3.info.train["batch"]
    out = self_train(image, m3, slices=2, threshold=0.34, epochs=1, device="cpu")
    assert out.info.train["batch"] == 4 and out.info.arch == "unet3d"


def test_a_class_only_the_labels_hold_is_taught_by_them_and_said(trained, caplog):
    """With no confident voxel of a class, the pseudo-labels cannot keep it: the user's labels are trained on
    (as before) instead of held out, and the log says that nothing scores the result."""
    image, truth, sparse, model = trained
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        adapted = self_train(image, model, sparse, slices=3, threshold=0.999, epochs=1, device="cpu")
    assert "your labels are trained on instead of held out" in caplog.text
    assert "label_blend_kept" not in adapted.info.train["self_training"]


def test_a_self_training_to_a_model_file_being_written_is_refused(trained, tmp_path):
    """As train: the output model file is locked for the run (two runs to it both reported success)."""
    from napari_xrayseg.core.errors import OutputExistsError
    from napari_xrayseg.core.selftrain import iter_self_train

    image, _, sparse, model = trained
    out = tmp_path / "a.safetensors"
    first = iter_self_train(image, model, sparse, slices=2, epochs=1, device="cpu", out=out)
    next(first)
    with pytest.raises(OutputExistsError, match="being written by another run"):
        self_train(image, model, sparse, slices=2, epochs=1, device="cpu", out=out, overwrite=True)
    first.close()
    self_train(image, model, sparse, slices=2, epochs=1, device="cpu", out=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
