"""The pretrained start shipped with the package, matching classes by grey level, and training precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_xrayseg.core.device import cpu_has_amx
from napari_xrayseg.core.errors import InputError, ModelFileError
from napari_xrayseg.core.inference import segment
from napari_xrayseg.core.models import (
    AUTO_START,
    PRETRAINED,
    class_groups,
    class_map,
    init_model,
    load_model,
    pretrained_path,
    reclass,
)
from napari_xrayseg.core.sample import GREY_LEVELS, make_phantom
from napari_xrayseg.core.training import AUTO_PRETRAINED_SHARE, PRETRAINED_EPOCHS, train

TINY = dict(epochs=1, steps_per_epoch=2, batch=2, patch=32, device="cpu")


@pytest.fixture(scope="module")
def volume():
    image, truth = make_phantom((18, 48, 48), seed=5)
    ann = np.zeros_like(truth)
    ann[[5, 12]] = truth[[5, 12]]
    return image, truth, ann


def test_the_shipped_start_loads_and_records_its_class_grey_levels():
    m = load_model(pretrained_path())
    assert (m.info.arch, m.info.context, m.info.channels, m.info.classes) == ("unet3d", 15, 1, [1, 2, 3])
    assert m.info.trained  # a history: it was trained, not initialised
    grey = m.info.train["class_grey"]
    # pore < YSZ < nickel, as the sample's phases are
    assert np.argsort(grey).tolist() == np.argsort([GREY_LEVELS[c] for c in (1, 2, 3)]).tolist()


def test_reclass_reorders_the_outputs_by_grey_rank():
    m = init_model("unet3d", classes=[1, 2, 3], context=3, seed=1)
    m.info.train["class_grey"] = [0.1, 0.8, 0.5]
    # the user's class 4 is the brightest (the model's 2), 7 the darkest (1), 9 between (3)
    r = reclass(m, [4, 7, 9], [0.9, 0.2, 0.6])
    assert r.info.classes == [4, 7, 9] and r.info.history == [] and r.info.train == {}
    m.network.eval()
    r.network.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = m.network(x), r.network(x)
    torch.testing.assert_close(b, a[:, [1, 0, 2]])
    assert m.info.classes == [1, 2, 3]  # the model given is not modified


def test_reclass_with_more_classes_gives_each_its_matched_channels_scores():
    # four user classes, the two darkest both nearest the model's darkest (its class 1): every
    # output channel, the last block's residual convolution included, starts as the matched one
    m = init_model("unet3d", size="tiny", classes=[1, 2, 3], context=5, seed=1)
    m.info.train["class_grey"] = [0.1, 0.8, 0.5]
    grey = [0.12, 0.2, 0.55, 0.85]
    assert class_map(grey, m.info.train["class_grey"]) == [0, 0, 2, 1]
    r = reclass(m, [1, 2, 3, 4], grey)
    assert r.info.classes == [1, 2, 3, 4] and r.info.params["out_channels"] == 4
    m.network.eval()
    r.network.eval()
    x = torch.randn(2, 5, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = m.network(x), r.network(x)
    torch.testing.assert_close(b, a[:, [0, 0, 2, 1]])


def test_reclass_with_fewer_classes_copies_the_matched_channels_of_the_last_block():
    m = init_model("unet", size="tiny", classes=[1, 2, 3], seed=1)
    m.info.train["class_grey"] = [0.1, 0.8, 0.5]
    r = reclass(m, [1, 2], [0.1, 0.6])  # pore / solid: the model's darkest and the solid nearest in grey
    assert r.info.classes == [1, 2] and r.info.params["out_channels"] == 2
    old, new = m.network.state_dict(), r.network.state_dict()
    same = [k for k in old if old[k].shape == new[k].shape]
    assert all(torch.equal(old[k], new[k]) for k in same)  # all but the head as they were
    head = [k for k in old if old[k].shape != new[k].shape]
    assert head
    for k in head:  # every tensor of the head: the model's channels 0 and 2 (class 1, class 3), none random
        d = next(i for i, (p, q) in enumerate(zip(old[k].shape, new[k].shape)) if p != q)
        picked = old[k].index_select(d, torch.tensor([0, 2]))
        if not torch.equal(new[k], picked):  # a conv's input channels: the other dimension picked too
            picked = picked.index_select(1 - d if d < 2 else 0, torch.tensor([0, 2]))
        torch.testing.assert_close(new[k], picked)


def test_reclass_with_fewer_classes_groups_a_3d_starts_scores(tmp_path):
    import json

    from napari_xrayseg.core.models import GROUPS_FORMAT_VERSION, _validate_info, save_model

    m = init_model("unet3d", size="tiny", classes=[1, 2, 3], context=5, seed=1)
    m.info.train["class_grey"] = [0.1, 0.8, 0.5]
    r = reclass(m, [4, 9], [0.1, 0.7])  # dark / the rest: 4 is the model's 1, 9 its 2 and 3
    assert r.info.params["groups"] == [[0], [1, 2]] and r.info.params["out_channels"] == 3
    assert r.info.classes == [4, 9] and r.info.format_version == GROUPS_FORMAT_VERSION
    old, new = m.network.state_dict(), r.network.state_dict()
    assert all(torch.equal(v, new[k]) for k, v in old.items())  # the same weights, all of them
    m.network.eval()
    r.network.eval()
    x = torch.randn(2, 5, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p, q = torch.softmax(m.network(x), 1), torch.softmax(r.network(x), 1)
    torch.testing.assert_close(q[:, 0], p[:, 0])
    torch.testing.assert_close(q[:, 1], p[:, 1] + p[:, 2])  # the union's probability
    # a middle phase against the rest: grey cannot tell (the rest's mean grey is between), votes can
    votes = [[50, 1], [40, 2], [3, 60]]  # the model's 1 and 2 fall on the user's 1, its 3 on the user's 2
    assert reclass(m, [1, 2], [0.45, 0.5], votes).info.params["groups"] == [[0, 1], [2]]
    assert class_groups([0.45, 0.5], [0.1, 0.8, 0.5]) == [[0], [1, 2]]  # what grey alone would say
    # saved and loaded as it is
    path = save_model(r, tmp_path / "g.safetensors")
    back = load_model(path)
    assert back.info.params["groups"] == [[0], [1, 2]] and back.info.format_version == GROUPS_FORMAT_VERSION
    back.network.eval()
    with torch.no_grad():
        torch.testing.assert_close(back.network(x), r.network(x))
    back.info.train["class_grey"] = [0.1, 0.7]
    with pytest.raises(InputError, match="already groups"):
        reclass(back, [1, 2], [0.1, 0.7])
    # a file that lies about its groups or its version is refused
    d = json.loads(json.dumps(back.info.__dict__))
    for edit, match in [
        ({"format_version": 1}, "groups"),
        ({"params": {**d["params"], "groups": [[0], [0, 1]]}}, "groups"),
        ({"params": {**d["params"], "groups": [[0], [1], [2]]}}, "groups"),
        ({"params": {**d["params"], "groups": [[0], ["a", 1]]}}, "groups"),  # not a TypeError from sorting
        ({"params": {**d["params"], "groups": "01"}}, "groups"),
        ({"classes": [1, 2, 3], "class_names": ["a", "b", "c"]}, "classes"),
    ]:
        with pytest.raises(ModelFileError, match=match):
            _validate_info({**d, **edit}, path)
    with pytest.raises(InputError, match="votes"):
        class_groups([0.1, 0.7], [0.1, 0.8, 0.5], votes=[[1, 2]])


def test_class_map_matches_by_rank_or_nearest_grey():
    own = [0.28, 0.75, 0.58]  # the shipped start's pore, nickel, YSZ
    assert class_map([0.9, 0.1, 0.5], own) == [1, 0, 2]  # same count: rank to rank, inverted or not
    assert class_map([0.27, 0.65], own) == [0, 2]  # pore / solid: pore and YSZ, the nearest solid grey
    assert class_map([0.3, 0.8], own) == [0, 1]  # pore / nickel
    assert class_map([0.62, 0.25], own) == [2, 0]  # the order given does not matter
    assert sorted(set(class_map([0.1, 0.2, 0.3, 0.6, 0.8], own))) == [0, 1, 2]  # more: every class used


def test_reclass_needs_the_models_grey_levels():
    m = init_model("unet", size="tiny", classes=[1, 2, 3])
    with pytest.raises(InputError, match="class_grey"):
        reclass(m, [1, 2, 3], [0.1, 0.2, 0.3])


def test_training_from_the_pretrained_start_matches_classes_by_grey(volume):
    image, truth, ann = volume
    # relabel: the user's 1 is nickel, 2 pore, 3 YSZ -- other values than the sample's, other order
    user = np.zeros_like(ann)
    user[ann == 2], user[ann == 1], user[ann == 3] = 1, 2, 3
    m = train(image, user, init=PRETRAINED, **TINY)
    assert m.info.arch == "unet3d" and m.info.classes == [1, 2, 3] and m.info.train["init"] == "pretrained"
    # even before learning much, the start segments the user's classes by their own values
    m0 = train(image, user, init=PRETRAINED, epochs=1, steps_per_epoch=1, batch=1, patch=32, lr=1e-9, device="cpu")
    from napari_xrayseg.core.metrics import evaluate

    truth_user = np.zeros_like(truth)
    truth_user[truth == 2], truth_user[truth == 1], truth_user[truth == 3] = 1, 2, 3
    assert evaluate(segment(image, m0, device="cpu"), truth_user).mean_dice > 0.8


def test_pretrained_start_with_two_classes_and_clear_refusals(volume):
    image, _, ann = volume
    two = np.where(ann == 3, 2, ann)  # pore / solid (nickel and YSZ)
    m = train(image, two, init=PRETRAINED, **TINY)
    assert m.info.params["groups"] == [[0], [1, 2]] and m.info.classes == [1, 2]  # the start's own scores, summed
    assert set(np.unique(np.asarray(segment(image, m, device="cpu")))) <= {1, 2}
    # YSZ against the rest: the rest's mean grey lies between the pore's and the nickel's, so grey
    # alone would put the nickel with YSZ; the start's own predictions on the slices group it right
    ysz = np.where(ann == 3, 2, np.where(ann > 0, 1, 0)).astype(ann.dtype)
    assert train(image, ysz, init=PRETRAINED, **TINY).info.params["groups"] == [[0, 1], [2]]
    with pytest.raises(InputError, match="context"):
        train(image, ann, init=PRETRAINED, context=3, **TINY)
    with pytest.raises(InputError, match="single-channel"):
        train(np.stack([image, image], -1), ann, init=PRETRAINED, channel_axis=-1, **TINY)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_precision_is_recorded_and_the_weights_stay_fp32(volume, precision):
    image, _, ann = volume
    m = train(image, ann, arch="unet", size="tiny", precision=precision, **TINY)
    assert m.info.train["precision"] == precision
    assert all(p.dtype == torch.float32 for p in m.network.parameters())


def test_training_precision_auto_and_refusals(volume):
    image, _, ann = volume
    m = train(image, ann, arch="unet", size="tiny", **TINY)
    assert m.info.train["precision"] == ("bf16" if cpu_has_amx() else "fp32")
    gan = train(image, ann, arch="unet", size="tiny", mode="pix2pix", **TINY)
    assert gan.info.train["precision"] == "fp32"  # pix2pix stays fp32 on CPU
    with pytest.raises(InputError, match="fp16"):
        train(image, ann, arch="unet", size="tiny", precision="fp16", **TINY)
    with pytest.raises(InputError, match="precision"):
        train(image, ann, arch="unet", size="tiny", precision="half", **TINY)


def test_the_pretrained_start_fine_tunes_for_a_few_epochs_unless_told(volume):
    image, _, ann = volume
    short = dict(steps_per_epoch=1, batch=1, patch=32, device="cpu")
    assert len(train(image, ann, init=PRETRAINED, **short).info.history) == PRETRAINED_EPOCHS
    assert len(train(image, ann, init=PRETRAINED, minutes=30, **short).info.history) == PRETRAINED_EPOCHS
    assert len(train(image, ann, init=PRETRAINED, epochs=2, **short).info.history) == 2


def test_auto_start_races_the_pretrained_start_against_random_weights(volume, tmp_path):
    """init="auto" (the default): both candidates train on the same rows, the better validated is kept and saved."""
    image, _, ann = volume
    records = []
    out = tmp_path / "auto.safetensors"
    m = train(image, ann, out=out, progress=records.append, **{**TINY, "epochs": 2})
    t = m.info.train
    assert m.info.arch == "unet3d" and t["init"] == AUTO_START and t["start"] in (PRETRAINED, "random")
    pre, rand = t["starts"][PRETRAINED], t["starts"]["random"]
    assert pre["epochs_run"] == 2 and rand["epochs_run"] == 2  # fewer epochs than PRETRAINED_EPOCHS given: those
    kept = pre if t["start"] == PRETRAINED else rand
    assert t["val_dice"] == kept["val_dice"] == max(pre["val_dice"], rand["val_dice"])
    # progress: per mille of the whole job, never backwards, each candidate tagged and its curves recorded
    assert {r.total for r in records} == {1000}
    steps = [r.step for r in records]
    assert steps == sorted(steps) and steps[-1] == 1000
    tags = [r.info["start"] for r in records]
    assert tags.index("random") > len(tags) - 1 - tags[::-1].index(PRETRAINED)  # pretrained first, then random
    assert sum("loss" in r.info for r in records) == 4  # 2 epochs each
    saved = load_model(out)
    assert saved.info.train["start"] == t["start"] and saved.info.train["starts"] == t["starts"]


def test_auto_start_falls_back_to_random_weights_where_the_start_does_not_fit(volume):
    image, _, ann = volume
    for kw in ({"size": "tiny"}, {"context": 3}, {"arch": "unet"}, {"val_fraction": 0.0}, {"init": "random"}):
        m = train(image, ann, **{**TINY, **kw})
        assert m.info.train["init"] is None and "starts" not in m.info.train, kw
    assert train(image, ann, init=None, **TINY).info.train["init"] is None


def test_auto_start_keeps_its_own_context_unless_the_user_gives_another(volume, tmp_path, monkeypatch):
    """A start trained on deeper sub-volumes than a new unet3d's default context is still raced (and fine-tuned at
    its own context); a context the user gives that is not the start's trains random weights only."""
    import dataclasses

    from napari_xrayseg.core import models, training

    shipped = load_model(pretrained_path())
    k = shipped.info.context + 6
    params = {**shipped.info.params, "in_channels": k}
    info = dataclasses.replace(shipped.info, params=params, context=k)
    net = models.build_network(info.arch, params)
    net.load_state_dict(shipped.network.state_dict())
    start = models.save_model(models.Model(net, info), tmp_path / "deeper.safetensors")
    monkeypatch.setattr(training, "pretrained_path", lambda: start)
    image, _, ann = volume
    m = train(image, ann, **TINY)
    assert m.info.train["init"] == AUTO_START and set(m.info.train["starts"]) == {PRETRAINED, "random"}
    assert m.info.context == (k if m.info.train["start"] == PRETRAINED else models.default_context("unet3d"))
    assert train(image, ann, context=k, **TINY).info.train["init"] == AUTO_START
    other = train(image, ann, context=models.default_context("unet3d"), **TINY)
    assert other.info.train["init"] is None and other.info.context == models.default_context("unet3d")


def test_auto_start_picks_by_validation_and_the_start_on_a_tie_or_blind_validation():
    from napari_xrayseg.core.models import Model
    from napari_xrayseg.core.training import _pick_start

    def cand(v, interfaces=10):
        m = init_model("unet", size="tiny", classes=[1, 2])
        m.info.train = {"val_dice": v, "epochs_run": 3, "elapsed_s": 1.0, "val_interface_pixels": interfaces}
        return m

    assert isinstance(cand(0.5), Model)
    assert _pick_start(cand(0.9), cand(0.8), 2.0).info.train["start"] == PRETRAINED
    assert _pick_start(cand(0.8), cand(0.9), 2.0).info.train["start"] == "random"
    # a tie (strokes inside the phases: both score 1.0) kept random weights, 0.11 below the start on the volume
    assert _pick_start(cand(1.0), cand(1.0), 2.0).info.train["start"] == PRETRAINED
    # validation rows without an interface cannot rank them at all: the start, which knows interfaces
    assert _pick_start(cand(0.995, 0), cand(1.0, 0), 2.0).info.train["start"] == PRETRAINED
    assert _pick_start(cand(None), cand(0.1), 2.0).info.train["start"] == "random"
    assert _pick_start(cand(0.1), None, 2.0).info.train["starts"]["random"] is None  # cancelled before an epoch
    m = _pick_start(cand(0.9), cand(0.8), 2.5)
    assert m.info.train["elapsed_s"] == 2.5 and m.info.train["starts"]["random"]["val_dice"] == 0.8


def test_auto_start_gives_the_random_start_the_rest_of_the_time_budget(volume):
    image, _, ann = volume
    m = train(image, ann, arch="unet3d", minutes=0.2, **{**TINY, "epochs": 1})  # "auto": unet under 5 min
    pre, rand = m.info.train["starts"][PRETRAINED], m.info.train["starts"]["random"]
    assert pre["minutes"] == pytest.approx(0.2 * AUTO_PRETRAINED_SHARE)
    assert 0 < rand["minutes"] < 0.2  # what the pretrained candidate left
    assert pre["epochs"] == rand["epochs"] == 1  # the epochs given cap both


def test_cancelling_the_auto_start_keeps_the_better_model_so_far(volume):
    from napari_xrayseg.core.errors import Cancelled
    from napari_xrayseg.core.progress import CancelToken

    image, _, ann = volume
    token = CancelToken()

    def stop_in_random(p):
        if p.info.get("start") == "random":
            token.cancel()

    with pytest.raises(Cancelled) as e:
        train(image, ann, cancel=token, progress=stop_in_random, **{**TINY, "epochs": 2})
    kept = e.value.result
    assert kept is not None and kept.info.train["start"] == PRETRAINED and kept.info.train["starts"]["random"] is None


def test_a_non_finite_training_step_is_skipped_and_repeated_ones_switch_cpu_bf16_off():
    """bf16 on some CPUs gave a non-finite step within a few hundred (AMD EPYC, AVX512-BF16): never apply one."""
    from napari_xrayseg.core.training import NONFINITE_FALLBACK, _SupervisedStep, make_loss

    m = init_model("unet", size="tiny", classes=[1, 2, 3], context=1, seed=0)
    step = _SupervisedStep(m.network, make_loss(), 1e-3, torch.device("cpu"), precision="bf16")
    step.train()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(2))
    step(x, y)  # a good step
    assert step.skipped == 0
    weights = {k: v.clone() for k, v in m.network.state_dict().items()}
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    step(bad, y)
    assert step.skipped == 1 and step.use_amp  # skipped, bf16 kept
    after = m.network.state_dict()
    # neither the weights nor batch norm's running statistics took anything from it
    assert all(torch.equal(weights[k], after[k]) for k in weights if k.endswith(("weight", "running_var")))
    step(x, y)  # a good step resets the count in a row
    for _ in range(NONFINITE_FALLBACK):
        step(bad, y)
    assert step.skipped == 1 + NONFINITE_FALLBACK and not step.use_amp and step.fell_back
    assert all(torch.isfinite(v).all() for v in m.network.state_dict().values() if v.is_floating_point())


def test_the_blend_with_the_start_keeps_the_best_validated_share_of_the_fine_tuned_weights(monkeypatch):
    """WiSE-FT: a * fine-tuned + (1 - a) * start, a by validation; ties keep the larger a, a margin smaller."""
    from napari_xrayseg.core import training

    m = init_model("unet", size="tiny", classes=[1, 2, 3], seed=3)
    tuned = {k: v.clone() for k, v in m.network.state_dict().items()}
    start = {k: torch.zeros_like(v) if v.is_floating_point() else v + 7 for k, v in tuned.items()}
    key = next(k for k, v in tuned.items() if v.is_floating_point() and v.abs().sum() > 0)
    m.info.train = {"val_dice": 0.5}
    # validation peaks where the weights are 0.5 of the fine-tuned ones
    peak = lambda: 0.9 - float((m.network.state_dict()[key] - 0.5 * tuned[key]).abs().mean())  # noqa: E731
    monkeypatch.setattr(training, "START_BLENDS", (0.3, 0.5, 1.0))
    out = training._blend_start(m, start, peak)
    t = out.info.train
    assert t["start_blend_kept"] == 0.5 and set(t["start_blend"]) == {"0.3", "0.5", "1"}
    assert t["start_blend"]["1"] == 0.5  # the fine-tuned weights' own validation, not run again
    assert t["val_dice"] == pytest.approx(0.9) and t["start_blend"]["0.5"] == pytest.approx(0.9, abs=1e-5)
    now = out.network.state_dict()
    for k, v in tuned.items():
        if v.is_floating_point():  # weights and batch norm's running statistics alike
            torch.testing.assert_close(now[k], 0.5 * v)
        else:  # batches counted: the fine-tuned model's
            assert torch.equal(now[k], v)
    # another grid of shares (a round of the annotation loop's, ROUND_BLENDS)
    m.network.load_state_dict(tuned)
    m.info.train = {"val_dice": 0.5}
    assert set(training._blend_start(m, start, peak, (0.7, 1.0)).info.train["start_blend"]) == {"0.7", "1"}
    # a tie keeps the larger share; no validation rows: START_BLEND, nothing validated
    m.network.load_state_dict(tuned)
    m.info.train = {"val_dice": 0.5}
    assert training._blend_start(m, start, lambda: 0.5).info.train["start_blend_kept"] == 1.0
    # with a margin: the smallest share validated within it of the best (the shipped start's rule)
    flat = tuned[key].flatten()
    i = int(flat.abs().argmax())
    share = lambda: round(float(m.network.state_dict()[key].flatten()[i] / flat[i]), 3)  # noqa: E731
    table = {0.15: 0.9000, 0.3: 0.9005, 0.5: 0.9008}
    for margin, kept in ((0.001, 0.15), (0.0005, 0.3), (0.0, 0.5), (0.5, 0.15)):
        m.network.load_state_dict(tuned)
        m.info.train = {"val_dice": 0.8995}
        t = training._blend_start(m, start, lambda: table[share()], (0.15, 0.3, 0.5, 1.0), margin).info.train
        assert t["start_blend_kept"] == kept and t["val_dice"] == pytest.approx(table[kept], abs=1e-5)
        torch.testing.assert_close(m.network.state_dict()[key], kept * tuned[key])
    m.network.load_state_dict(tuned)
    m.info.train = {"val_dice": None}
    t = training._blend_start(m, start, None).info.train
    assert t["start_blend_kept"] == training.START_BLEND and list(t["start_blend"]) == [f"{training.START_BLEND:g}"]
    torch.testing.assert_close(m.network.state_dict()[key], training.START_BLEND * tuned[key])


def test_fine_tuning_the_pretrained_start_blends_it_back_in_and_only_that_start(volume, monkeypatch):
    from napari_xrayseg.core import training

    image, _, ann = volume
    m = train(image, ann, init=PRETRAINED, **TINY)
    t = m.info.train
    assert t["start_blend_kept"] in training.START_BLENDS and len(t["start_blend"]) == len(training.START_BLENDS)
    assert "0.15" in t["start_blend"]  # the shipped start's grid reaches lower than a round's (ROUND_BLENDS)
    # the smallest share validated within START_BLEND_MARGIN of the best
    best, kept = max(t["start_blend"].values()), t["start_blend_kept"]
    low = best - training.START_BLEND_MARGIN  # scores are recorded rounded to 1e-5
    assert t["start_blend"][f"{kept:g}"] >= low - 1e-5
    assert all(v < low + 1e-5 for a, v in t["start_blend"].items() if float(a) < kept)
    assert t["val_dice"] == pytest.approx(t["start_blend"][f"{kept:g}"], abs=1e-5)  # recorded rounded
    # the blend is of the start as matched to the classes: only the share 1.0 gives the plain fine-tuning
    monkeypatch.setattr(training, "START_BLENDS", (1.0,))
    plain = train(image, ann, init=PRETRAINED, **TINY)
    monkeypatch.setattr(training, "START_BLENDS", (0.0,))
    start = train(image, ann, init=PRETRAINED, **TINY)
    matched = training._pretrained_start([1, 2, 3], [GREY_LEVELS[c] for c in (1, 2, 3)], 15, 1, None)
    for k, v in matched.network.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(start.network.state_dict()[k], v)
    assert not all(torch.equal(plain.network.state_dict()[k], v) for k, v in matched.network.state_dict().items())
    # a model file as the start (continuing training) is not blended back
    assert "start_blend" not in train(image, ann, init=plain, **TINY).info.train


def test_auto_start_fine_tunes_the_start_longer_where_its_blend_keeps_little_of_it(volume, monkeypatch):
    """A material unlike the start's family (foams, sphere packs, a minor phase, four phases): the blend kept
    a = 0.7 or 1 after 5 epochs with validation still rising, and the fine-tuning stopped there (20 epochs:
    foam 0.959 -> 0.967, spheres 0.909 -> 0.922; docs/accuracy.md, session 35)."""
    from napari_xrayseg.core import training

    image, _, ann = volume
    monkeypatch.setattr(training, "PRETRAINED_EPOCHS", 1)
    monkeypatch.setattr(training, "LONG_PRETRAINED_EPOCHS", 2)
    kw = {**TINY, "epochs": 3}
    monkeypatch.setattr(training, "START_BLENDS", (0.7,))  # as a start unlike the scan validates: a = 0.7 kept
    records = []
    t = train(image, ann, progress=records.append, **kw).info.train
    pre = t["starts"][PRETRAINED]
    assert pre["long_fine_tuning"]["epochs"] == [1, 2] and pre["epochs_run"] in (1, 2)  # the better validated
    assert pre["val_dice"] == max(v for v in pre["long_fine_tuning"]["val_dice"] if v is not None)
    steps = [r.step for r in records]
    assert steps == sorted(steps) and steps[-1] == 1000
    assert sum("loss" in r.info and r.info["start"] == PRETRAINED for r in records) == 3  # 1 + 2 epochs
    monkeypatch.setattr(training, "START_BLENDS", (0.15, 1.0))
    monkeypatch.setattr(training, "START_BLEND_MARGIN", 1.0)  # a = 0.15 kept: some of the start is worth keeping
    t = train(image, ann, **kw).info.train
    assert t["starts"][PRETRAINED]["long_fine_tuning"] is None and t["starts"][PRETRAINED]["epochs_run"] == 1


def test_reclass_takes_a_model_on_a_gpu():
    """reclass built its index tensors on the CPU and met a CUDA model's state (QA, GPU paths): run with torch's
    fake CUDA tensors, which follow CUDA's device rules on a CPU-only build; and an MPS out-of-memory is a GPU's."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from napari_xrayseg import init_model
    from napari_xrayseg.core.errors import out_of_memory
    from napari_xrayseg.core.models import reclass

    for classes, grey in (([4, 7, 9], [0.9, 0.2, 0.6]), ([4, 7, 9, 11], [0.9, 0.2, 0.6, 0.4])):
        m = init_model("unet", size="tiny", classes=3)
        m.info.train["class_grey"] = [0.1, 0.8, 0.5]
        real = m.network.state_dict
        with FakeTensorMode(allow_non_fake_inputs=True):
            m.network.state_dict = lambda real=real: {
                k: torch.empty(v.shape, dtype=v.dtype, device="cuda") for k, v in real().items()
            }
            assert reclass(m, classes, grey).info.classes == classes
    mps = torch.OutOfMemoryError("MPS backend out of memory (MPS allocated: 17.2 GB). Tried to allocate 256.00 MB")
    assert str(out_of_memory(mps, "segmenting")).startswith("out of memory segmenting (GPU: MPS backend")


def test_training_on_mps_records_the_fp32_it_runs(caplog):
    """precision='bf16' on Apple MPS was recorded as bf16 while the steps ran fp32 (autocast off there; QA)."""
    import logging

    import torch

    from napari_xrayseg.core.training import training_precision

    with caplog.at_level(logging.WARNING, logger="napari_xrayseg"):
        assert training_precision("bf16", torch.device("mps")) == "fp32"
        assert training_precision("auto", torch.device("mps")) == "fp32"
    assert caplog.text.count("training on Apple MPS runs in fp32") == 1
    assert training_precision("fp32", torch.device("cpu")) == "fp32"
