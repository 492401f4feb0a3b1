"""Resume, OME-Zarr pyramids and dask.distributed runs of segment()."""

import os
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from napari_xrayseg.core.errors import Cancelled, ClusterError, InputError, OutputExistsError, for_cli, for_gui
from napari_xrayseg.core.inference import (
    SlabMarkers,
    output_complete,
    output_levels,
    read_output_meta,
    segment,
    write_pyramid,
)
from napari_xrayseg.core.io import open_volume, read_voxel_size, write_volume
from napari_xrayseg.core.models import init_model, save_model
from napari_xrayseg.core.progress import CancelToken
from napari_xrayseg.core.writer import StoreWriter

KW = {"tile": 32, "device": "cpu", "batch": 4, "slab": 2}


@pytest.fixture
def vol(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.random((9, 40, 48), dtype=np.float32)
    write_volume(tmp_path / "in.zarr", v, chunks=(2, 40, 48))
    return v


def test_resume_after_cancel_equals_clean_run(tmp_path, vol, tiny_model):
    clean = segment(vol, tiny_model, **KW)
    assert len(np.unique(clean)) > 1  # a real test: the untrained net gives several classes
    out = tmp_path / "out.zarr"
    token = CancelToken()

    def cancel_after_two(p):
        if p.step >= 4:
            token.cancel()

    with pytest.raises(Cancelled):
        segment(vol, tiny_model, out=out, cancel=token, progress=cancel_after_two, **KW)
    assert not output_complete(out)
    assert SlabMarkers(out).done() == {(0, 2), (2, 4)}
    # the partial output is readable, and a plain re-run refuses and names --resume
    assert zarr.open_array(store=str(out), mode="r")[:4].any()
    with pytest.raises(OutputExistsError, match="resume"):
        segment(vol, tiny_model, out=out, **KW)
    steps = []
    res = segment(vol, tiny_model, out=out, resume=True, progress=lambda p: steps.append(p.step), **KW)
    assert steps == [4, 6, 8, 9]  # a record as it starts (4 of 9 done), then only the three missing slabs ran
    np.testing.assert_array_equal(res, clean)
    assert output_complete(out)
    # resuming a complete output does nothing and returns it
    steps.clear()
    np.testing.assert_array_equal(segment(vol, tiny_model, out=out, resume=True, progress=steps.append, **KW), clean)
    assert steps == []


def _reader_data(path):
    """What the plugin's reader gives napari for an output: a dask array (level 0 of a pyramid)."""
    import dask.array as da

    from napari_xrayseg.core.writer import output_levels

    return da.from_zarr(output_levels(path)[0])


@pytest.mark.parametrize("pyramid", [False, True])
def test_an_unfinished_output_is_not_measured(tmp_path, vol, tiny_model, pyramid):
    """Its missing slabs read as 0: evaluate and analyze refuse it (and name --resume) until it is finished."""
    from napari_xrayseg.core.io import open_volume
    from napari_xrayseg.core.metrics import evaluate
    from napari_xrayseg.core.microstructure import analyze

    out = tmp_path / "out.zarr"
    token = CancelToken()
    kw = {**KW, "pyramid": pyramid}
    with pytest.raises(Cancelled):
        segment(vol, tiny_model, out=out, cancel=token, progress=lambda p: p.step >= 4 and token.cancel(), **kw)
    truth = np.ones(vol.shape, np.uint8)
    for measure in (
        lambda: evaluate(out, truth),
        lambda: evaluate(open_volume(out), truth),
        lambda: evaluate(truth, open_volume(out)),
        lambda: analyze(open_volume(out), tortuosity=False),
        # the napari reader's layer data (dask over the store; QA h5: the Evaluate and Analyze widgets scored it)
        lambda: evaluate(_reader_data(out), truth),
        lambda: analyze(_reader_data(out), tortuosity=False),
    ):
        with pytest.raises(InputError, match=r"unfinished predict run \(2 slabs done.*--resume"):
            measure()
    segment(vol, tiny_model, out=out, resume=True, **kw)
    assert evaluate(out, truth).mean_dice is not None
    assert analyze(open_volume(out), tortuosity=False).shape == vol.shape


def test_slab_cut_off_mid_write_is_recomputed(tmp_path, vol, tiny_model, monkeypatch):
    clean = segment(vol, tiny_model, **KW)
    out = tmp_path / "out.zarr"
    real_store = StoreWriter._store
    calls = []

    def crashing_store(self, i, region, result):
        calls.append(region)
        if len(calls) == 3:  # half of the slab lands, then the process "dies"
            real_store(self, i, region, {"labels": np.full_like(result["labels"], 255)})
            raise RuntimeError("power cut")
        real_store(self, i, region, result)

    monkeypatch.setattr(StoreWriter, "_store", crashing_store)
    with pytest.raises(RuntimeError, match="power cut"):
        segment(vol, tiny_model, out=out, **KW)
    monkeypatch.setattr(StoreWriter, "_store", real_store)
    assert SlabMarkers(out).done() == {(0, 2), (2, 4)}  # no marker for the garbage slab
    res = segment(vol, tiny_model, out=out, resume=True, **KW)
    np.testing.assert_array_equal(res, clean)


@pytest.mark.parametrize("extra", [{"axes": "zyx"}, {"confidence": "maxprob"}, {"pyramid": True}])
def test_a_run_cut_off_while_its_stores_are_created_resumes(tmp_path, vol, tiny_model, monkeypatch, extra):
    """Its labels store had attributes before its other stores existed: resume refused it ("not an output of
    xrayseg predict", "its confidence output is missing") or failed on a missing pass store."""
    kw = {**KW, **extra}
    if "confidence" in extra:
        kw["confidence_out"] = tmp_path / "clean-conf.zarr"
    clean = segment(vol, tiny_model, out=tmp_path / "clean.zarr", **kw)
    clean = clean[0] if isinstance(clean, tuple) else clean
    real = {name: getattr(zarr, name) for name in ("create_array", "create_group")}
    for kill in range(1, 4):
        out, calls = tmp_path / f"cut{kill}.zarr", []
        if "confidence" in extra:
            kw["confidence_out"] = tmp_path / f"cut{kill}-conf.zarr"

        def cut(name, *a, _calls=calls, _kill=kill, **k):
            _calls.append(name)
            if len(_calls) == _kill:
                raise KeyboardInterrupt  # Ctrl-C, or the process killed, between two stores
            return real[name](*a, **k)

        for name in real:
            monkeypatch.setattr(zarr, name, lambda *a, _n=name, **k: cut(_n, *a, **k))
        try:
            segment(vol, tiny_model, out=out, **kw)
        except KeyboardInterrupt:
            pass
        else:
            break  # no store left to cut before
        finally:
            for name, f in real.items():
                monkeypatch.setattr(zarr, name, f)
        assert not output_complete(out)
        again = {"resume": True} if kill % 2 else {"overwrite": True}  # either starts it afresh
        res = segment(vol, tiny_model, out=out, **again, **kw)
        np.testing.assert_array_equal(res[0] if isinstance(res, tuple) else res, clean)
        assert output_complete(out)
    assert kill > 1


def test_resume_refuses_another_model_or_settings(tmp_path, vol, tiny_model):
    out = tmp_path / "out.zarr"
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        segment(vol, tiny_model, out=out, cancel=token, **KW)
    other = init_model("unet", size="tiny", classes=3, tile=32, seed=1)
    with pytest.raises(InputError, match="different model weights") as e:
        segment(vol, other, out=out, resume=True, **KW)
    assert for_cli(e.value).endswith("or add --overwrite to start again")
    assert for_gui(e.value).endswith("or choose a new output to start again")  # the widgets have no overwrite
    with pytest.raises(InputError, match="axis"):
        segment(vol, tiny_model, out=out, resume=True, axis=1, **KW)
    with pytest.raises(InputError, match="different nodata"):
        segment(vol, tiny_model, out=out, resume=True, nodata=0, **KW)
    with pytest.raises(InputError, match=r"different slab depth \(the slab depth follows .* pass --slab 2\)"):
        segment(vol, tiny_model, out=out, resume=True, **{**KW, "slab": 4})
    with pytest.raises(InputError, match="need an output"):
        segment(vol, tiny_model, resume=True, **KW)
    # a path that is not our output
    write_volume(tmp_path / "foreign.zarr", np.zeros((2, 2), np.uint8))
    with pytest.raises(InputError, match="not an output"):
        segment(vol, tiny_model, out=tmp_path / "foreign.zarr", resume=True, **KW)


def test_resume_refuses_another_image_of_the_same_shape(tmp_path, vol, tiny_model, caplog):
    """The model's normalisation comes from the first run on resume: another image would be mixed in silently."""
    out = tmp_path / "out.zarr"
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        segment(vol, tiny_model, out=out, cancel=token, **KW)
    with pytest.raises(InputError, match="written from another image"):
        segment(vol[::-1].copy(), tiny_model, out=out, resume=True, **KW)
    labels = segment(zarr.open_array(store=str(tmp_path / "in.zarr"), mode="r"), tiny_model, out=out, resume=True, **KW)
    np.testing.assert_array_equal(labels[...], segment(vol, tiny_model, **KW))  # the same image, from zarr: resumed
    meta = read_output_meta(out)
    del meta["input_digest"]  # an output of an earlier version: resumed as before
    node = zarr.open(store=str(out), mode="r+")
    node.attrs["napari_xrayseg"] = meta
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        segment(vol, tiny_model, out=out, resume=True, **KW)
    # QA: another scan of the same shape was finished into such an output without a word
    assert "started by an older napari-xrayseg, which did not record its image" in caplog.text


def test_resume_without_existing_output_is_a_normal_run(tmp_path, vol, tiny_model):
    res = segment(vol, tiny_model, out=tmp_path / "new.zarr", resume=True, **KW)
    np.testing.assert_array_equal(res, segment(vol, tiny_model, **KW))


def test_pyramid_output_is_ome_zarr(tmp_path, tiny_model):
    img = np.random.default_rng(2).random((300, 520), dtype=np.float32)
    out = tmp_path / "p.zarr"
    res = segment(img, tiny_model, out=out, pyramid=True, tile=64, device="cpu")
    levels = output_levels(out)
    assert [lv.shape for lv in levels] == [(300, 520), (150, 260), (75, 130)]
    np.testing.assert_array_equal(levels[0][...], res)
    np.testing.assert_array_equal(levels[1][...], res[::2, ::2])
    np.testing.assert_array_equal(levels[2][...], res[::4, ::4])
    g = zarr.open_group(store=str(out), mode="r")
    ms = g.attrs["ome"]["multiscales"][0]
    assert g.attrs["ome"]["version"] == "0.5"
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == [[1, 1], [2, 2], [4, 4]]
    assert output_complete(out) and read_output_meta(out)["pyramid"] is True
    # a finished output keeps no run bookkeeping: zarr lists the group without a warning about it
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2", "zarr.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(g.keys()) == ["0", "1", "2"]
    # open_volume reads level 0 of the OME-Zarr
    from napari_xrayseg.core.io import open_volume

    np.testing.assert_array_equal(open_volume(out)[...], res)


def test_write_pyramid_3d_keeps_label_values(tmp_path):
    g = zarr.open_group(store=str(tmp_path / "g.zarr"), mode="w")
    lab = np.random.default_rng(0).integers(1, 4, (20, 33, 40)).astype(np.uint8)
    g.create_array("0", shape=lab.shape, chunks=(4, 33, 40), dtype="uint8")[...] = lab
    levels = write_pyramid(g, min_side=8)
    assert [lv.shape for lv in levels] == [(20, 33, 40), (10, 17, 20), (5, 9, 10), (3, 5, 5)]
    for i, lv in enumerate(levels):
        np.testing.assert_array_equal(lv[...], lab[:: 2**i, :: 2**i, :: 2**i])
        assert set(np.unique(lv[...])) <= {1, 2, 3}


@pytest.mark.needs("distributed")
@pytest.mark.slow
def test_distributed_local_cluster_equals_single_process(tmp_path, vol, tiny_model):
    import distributed  # in the dev/test install: a missing one is a failure, not a skip

    from napari_xrayseg.core.distributed import segment_distributed

    mpath = save_model(tiny_model, tmp_path / "m.safetensors")
    clean = segment(vol, tiny_model, **KW)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        steps = []
        res = segment_distributed(
            tmp_path / "in.zarr",
            mpath,
            tmp_path / "d.zarr",
            client=client,
            torch_threads=1,
            progress=lambda p: steps.append(p.step),
            voxel_size=(2.0, 1.0, 1.0),
            **KW,
        )
        np.testing.assert_array_equal(res[...], clean)
        assert output_complete(tmp_path / "d.zarr")
        assert read_voxel_size(tmp_path / "d.zarr") == ((2.0, 1.0, 1.0), "um")  # metadata as in one process
        assert sorted(steps) == steps and steps[-1] == 9 and len(steps) == 6  # one as it starts, one per slab
        assert res.chunks[0] == 2  # output chunks = slabs: no two tasks share a chunk
        # a volume whose outside is 0: nodata reaches the workers, which read the image themselves
        hole = np.array(vol)
        hole[:, :, :5] = 0
        write_volume(tmp_path / "hole.zarr", hole)
        masked = segment_distributed(
            tmp_path / "hole.zarr", mpath, tmp_path / "h.zarr", client=client, torch_threads=1, nodata=0, **KW
        )
        np.testing.assert_array_equal(masked[...], segment(hole, tiny_model, nodata=0, **KW))
        assert (masked[:, :, :5] == 0).all() and (masked[:, :, 5:] > 0).all()

        # each worker process loaded the model at most once, whatever number of slabs it ran
        def model_loads():
            from napari_xrayseg.core import distributed as d

            return sum(1 for k in d._CACHE if k[0] == "model")

        loads = client.run(model_loads)
        assert len(loads) == 2 and all(n <= 1 for n in loads.values()) and sum(loads.values()) >= 1
        # a second run on the same workers with another overlap: its own predictor, not the cached one
        wide = segment_distributed(
            tmp_path / "in.zarr", mpath, tmp_path / "o.zarr", client=client, torch_threads=1, **{**KW, "overlap": 0.6}
        )
        np.testing.assert_array_equal(wide[...], segment(vol, tiny_model, **{**KW, "overlap": 0.6}))
        assert not np.array_equal(wide[...], clean)  # the overlap changes the labels: the check has teeth
        # a model that levels its inputs slice by slice (normalize="slice"): the workers level as one process does
        import copy as _copy

        from napari_xrayseg.core.models import LEVEL_FORMAT_VERSION

        lev = _copy.deepcopy(tiny_model)
        lev.info.normalization = {**lev.info.normalization, "level": "z"}
        lev.info.format_version = LEVEL_FORMAT_VERSION
        lpath = save_model(lev, tmp_path / "lev.safetensors")
        stepped = np.array(vol)
        stepped[5:] = stepped[5:] * 0.6 + 0.3
        write_volume(tmp_path / "stepped.zarr", stepped)
        levelled = segment_distributed(
            tmp_path / "stepped.zarr", lpath, tmp_path / "l.zarr", client=client, torch_threads=1, **KW
        )
        np.testing.assert_array_equal(levelled[...], segment(stepped, lev, **KW))
        assert not np.array_equal(levelled[...], segment(stepped, tiny_model, **KW))  # levelling changed labels
        # a multi-channel model: the workers split the channels as build_job does (they crashed)
        from napari_xrayseg.core.training import train

        two = np.stack([np.asarray(vol), 1 - np.asarray(vol)], axis=1)  # (Z, C, Y, X)
        write_volume(tmp_path / "two.zarr", two)
        ann = np.zeros(vol.shape, np.uint8)
        ann[::4] = (np.asarray(vol)[::4] > 0.5) + 1
        fit = {"arch": "unet", "size": "tiny", "epochs": 1, "steps_per_epoch": 1, "batch": 1, "patch": 32}
        mc = train(two, ann, channel_axis=1, device="cpu", out=tmp_path / "mc.safetensors", **fit)
        both = segment_distributed(
            tmp_path / "two.zarr",
            tmp_path / "mc.safetensors",
            tmp_path / "mc.zarr",
            client=client,
            torch_threads=1,
            **KW,
        )
        np.testing.assert_array_equal(both[...], segment(two, mc, **KW))

        # a cancelled cluster run stops and leaves an unfinished output
        token = CancelToken()
        token.cancel()
        with pytest.raises(Cancelled):
            segment_distributed(tmp_path / "in.zarr", mpath, tmp_path / "x.zarr", client=client, cancel=token, **KW)
        assert not output_complete(tmp_path / "x.zarr")
        # a run cut short in one process is finished on the cluster, to the same result
        token = CancelToken()
        with pytest.raises(Cancelled):
            segment(  # Cancel after the first slab (not at the record as the run starts)
                vol,
                tiny_model,
                out=tmp_path / "c.zarr",
                cancel=token,
                progress=lambda p: p.step and token.cancel(),
                **KW,
            )
        assert SlabMarkers(tmp_path / "c.zarr").done() == {(0, 2)}
        steps.clear()
        res2 = segment_distributed(
            tmp_path / "in.zarr",
            mpath,
            tmp_path / "c.zarr",
            client=client,
            resume=True,
            progress=lambda p: steps.append(p.step),
            **KW,
        )
        assert len(steps) == 5 and steps[0] == 2  # as it starts (slab 0-2 kept), then the four slabs left
        np.testing.assert_array_equal(res2[...], clean)


def test_distributed_refuses_in_memory_inputs(tmp_path, vol, tiny_model):
    from napari_xrayseg.core.distributed import segment_distributed

    with pytest.raises(InputError, match="model must be a file path"):
        segment_distributed(tmp_path / "in.zarr", tiny_model, tmp_path / "o.zarr", workers=1)
    with pytest.raises(InputError, match="image must be a path"):
        segment_distributed(vol, tmp_path / "m.safetensors", tmp_path / "o.zarr", workers=1)


def test_disk_full_mid_run_keeps_finished_slabs_and_resumes(tmp_path, vol, tiny_model, monkeypatch):
    import errno

    from napari_xrayseg.core.errors import OutputWriteError

    clean = segment(vol, tiny_model, **KW)
    real_store = StoreWriter._store
    calls = []

    def full_disk(self, i, region, result):
        calls.append(region)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_store(self, i, region, result)

    monkeypatch.setattr(StoreWriter, "_store", full_disk)
    out = tmp_path / "out.zarr"
    with pytest.raises(OutputWriteError, match="no space left on device writing .*out.zarr.*--resume"):
        segment(vol, tiny_model, out=out, **KW)
    monkeypatch.setattr(StoreWriter, "_store", real_store)
    assert SlabMarkers(out).done() == {(0, 2), (2, 4)} and not output_complete(out)
    np.testing.assert_array_equal(segment(vol, tiny_model, out=out, resume=True, **KW), clean)


@pytest.mark.needs("distributed")
@pytest.mark.slow
def test_dead_worker_is_one_line_and_the_old_output_survives(tmp_path, vol, tiny_model, monkeypatch):
    import distributed

    from napari_xrayseg.core import distributed as dist
    from napari_xrayseg.core.errors import ClusterError

    mpath = save_model(tiny_model, tmp_path / "m.safetensors")
    out = tmp_path / "d.zarr"
    old = segment(vol, tiny_model, out=out, axis=1, **KW)  # the result a user already has
    real = dist._run_slab

    def dies_on_the_third_slab(spec, i, r):
        if r == (4, 6):
            raise distributed.KilledWorker("xrayseg-slab", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
        return real(spec, i, r)

    monkeypatch.setattr(dist, "_run_slab", dies_on_the_third_slab)
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        with pytest.raises(ClusterError, match=r"a dask worker died .*--resume"):
            dist.segment_distributed(tmp_path / "in.zarr", mpath, out, client=client, overwrite=True, **KW)
        np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], old)  # untouched
        monkeypatch.setattr(dist, "_run_slab", real)
        res = dist.segment_distributed(
            tmp_path / "in.zarr", mpath, out, client=client, overwrite=True, resume=True, **KW
        )
    np.testing.assert_array_equal(res[...], segment(vol, tiny_model, **KW))
    assert output_complete(out) and not (tmp_path / ".d.zarr.xrayseg-new").exists()


def test_overwrite_failing_midway_keeps_the_old_output(tmp_path, vol, tiny_model):
    """An inf slab found mid-run with overwrite=True: the old output is intact, the new one resumable beside it."""
    out = tmp_path / "o.zarr"
    vol = np.random.default_rng(2).random((20, 32, 32), dtype=np.float32)
    old = segment(vol, tiny_model, out=out, axis=2, **KW)
    bad = vol.copy()
    bad[7, 3, 3] = np.inf  # slice 7 is not among those the normalisation samples: found mid-run
    with pytest.raises(InputError, match="inf values"):
        segment(bad, tiny_model, out=out, overwrite=True, **KW)
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], old)
    assert output_complete(out)
    new = tmp_path / ".o.zarr.xrayseg-new"
    assert SlabMarkers(new).done() == {(0, 2), (2, 4), (4, 6)}
    res = segment(vol, tiny_model, out=out, overwrite=True, resume=True, **KW)
    np.testing.assert_array_equal(res, segment(vol, tiny_model, **KW))
    assert not new.exists()


def test_overwrite_cancelled_keeps_the_old_output(tmp_path, vol, tiny_model):
    from faults import NthCheck

    out = tmp_path / "o.zarr"
    old = segment(vol, tiny_model, out=out, axis=1, **KW)
    with pytest.raises(Cancelled):
        segment(vol, tiny_model, out=out, overwrite=True, cancel=NthCheck(4), **KW)
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], old)
    # a plain --overwrite starts the replacement again from scratch
    res = segment(vol, tiny_model, out=out, overwrite=True, **KW)
    np.testing.assert_array_equal(res, segment(vol, tiny_model, **KW))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "o.zarr"]


def test_an_interrupted_swap_is_repaired(tmp_path, vol, tiny_model):
    """Killed between the two renames of the swap: the next claim brings the old output back."""
    out = tmp_path / "o.zarr"
    old = segment(vol, tiny_model, out=out, **KW)
    out.rename(tmp_path / ".o.zarr.xrayseg-old")  # the state right after the first rename
    with pytest.raises(OutputExistsError):
        segment(vol, tiny_model, out=out, axis=1, **KW)
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], old)


@pytest.mark.needs("distributed")
def test_a_lost_scheduler_or_a_bad_address_is_one_clear_error(tmp_path, vol, tiny_model):
    """The client closed mid-run (as when the scheduler dies) raised ClosedClientError from the clean-up,
    hiding the cause; a malformed address raised a raw ValueError."""
    import distributed

    from napari_xrayseg.core import distributed as dist

    mpath = save_model(tiny_model, tmp_path / "m.safetensors")
    out = tmp_path / "lost.zarr"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cl:
        client = distributed.Client(cl)

        def close_at_the_second_slab(p):
            if p.step >= 4:
                client.close()

        with pytest.raises(ClusterError, match=r"lost the dask scheduler .*--resume"):
            dist.segment_distributed(
                tmp_path / "in.zarr", mpath, out, client=client, progress=close_at_the_second_slab, **KW
            )
    assert not output_complete(out) and len(SlabMarkers(out).done()) >= 2  # finished slabs kept
    res = segment(open_volume(tmp_path / "in.zarr"), tiny_model, out=out, resume=True, **KW)
    np.testing.assert_array_equal(res, segment(vol, tiny_model, **KW))
    with pytest.raises(InputError, match=r"cannot reach the dask scheduler at notanaddress"):
        dist.segment_distributed(tmp_path / "in.zarr", mpath, tmp_path / "x.zarr", scheduler="notanaddress", **KW)


@pytest.mark.needs("distributed")
def test_refused_cluster_with_overwrite_keeps_the_old_output(tmp_path, vol, tiny_model, monkeypatch, capsys):
    """An unreachable scheduler is found before any output is touched (connection refused, simulated fast)."""
    import distributed

    from napari_xrayseg.cli import main

    mpath = save_model(tiny_model, tmp_path / "m.safetensors")
    out = tmp_path / "o.zarr"
    old = segment(vol, tiny_model, out=out, **KW)

    def refused(address, timeout=None):
        raise OSError(f"Timed out trying to connect to {address} after {timeout}")

    monkeypatch.setattr(distributed, "Client", refused)
    code = main(
        [
            "predict",
            "--image",
            str(tmp_path / "in.zarr"),
            "--model",
            str(mpath),
            "--out",
            str(out),
            "--scheduler",
            "tcp://127.0.0.1:1",
            "--overwrite",
            "--device",
            "cpu",
            "--tile",
            "32",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot reach the dask scheduler at tcp://127.0.0.1:1" in err[0]
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "m.safetensors", "o.zarr"]


def test_an_owned_cluster_closes_only_once_its_workers_are_idle():
    """A cancelled slab runs to its end on its worker: closing the scheduler under it made the worker log a
    CommClosedError traceback. _settle waits (bounded) for the workers to go idle."""
    from napari_xrayseg.core.distributed import _settle

    class Client:
        calls = 0

        def processing(self):
            self.calls += 1
            return {"tcp://w1": ["xrayseg-slab"] if self.calls < 3 else [], "tcp://w2": []}

    c = Client()
    _settle(c)
    assert c.calls == 3

    class Closed:
        def processing(self):
            raise RuntimeError("client is closed")

    _settle(Closed())  # nothing to wait for: no error


def test_an_orthoplane_run_without_room_for_its_passes_is_refused_before_it_starts(
    tmp_path, vol, tiny_model, monkeypatch
):
    """The earlier passes' probabilities stay inside the output until the run ends (12 B a voxel for three
    classes and axes): a full disk hours in is now a message before anything is written."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "o.zarr"
    with pytest.raises(
        InputError, match=r"keeps its earlier passes' class probabilities .* about 0.2 MB, and 0.0 MB are free"
    ):
        segment(vol, tiny_model, out=out, axes="zyx", **KW)
    assert not out.exists()
    segment(vol, tiny_model, out=out, **KW)  # one axis keeps no probabilities: not refused


def test_review_fixes_lerp_devices_settle_and_image_named_stores(tmp_path, vol, tiny_model, monkeypatch):
    """Self-training's original stays on the CPU while the adapted net may be on a GPU: the blend moves the
    start (a device mismatch raised after the whole fine-tuning); a --scheduler's cluster is not waited on;
    segment(out="labels.tif") made a zarr folder of that name (the CLI refused it, the API did not)."""
    import torch

    from napari_xrayseg.core import distributed as dist
    from napari_xrayseg.core.training import _lerp_state

    start = {"w": torch.zeros(3), "n": torch.tensor(4)}
    tuned = {"w": torch.ones(3, device="meta"), "n": torch.tensor(7, device="meta")}
    mixed = _lerp_state(start, tuned, 0.3)
    assert mixed["w"].device.type == "meta" and mixed["n"] is tuned["n"]
    settled = []
    monkeypatch.setattr(dist, "_settle", lambda c: settled.append(c))
    monkeypatch.setattr(dist, "_client", lambda *a: ("client", ["client"]))  # a --scheduler's: ours to close only
    with pytest.raises(Exception):  # noqa: B017 - the fake client cannot run anything; only the settling matters
        dist.segment_distributed(
            tmp_path / "in.zarr",
            save_model(tiny_model, tmp_path / "m.safetensors"),
            tmp_path / "s.zarr",
            scheduler="tcp://x:1",
            **KW,
        )
    assert settled == []
    with pytest.raises(InputError, match=r"is written as a zarr store: name it .*labels.zarr"):
        segment(vol, tiny_model, out=tmp_path / "labels.tif", **KW)
    assert not (tmp_path / "labels.tif").exists()


def test_a_cluster_that_cannot_start_names_the_main_guard(monkeypatch):
    """A script without `if __name__ == "__main__":` re-ran itself in every spawned worker: pages of "Nanny failed
    to start" tracebacks and nothing that said why."""
    pytest.importorskip("distributed")
    import multiprocessing

    import distributed

    from napari_xrayseg.core import distributed as dist
    from napari_xrayseg.core.errors import ClusterError, InputError

    def broken(**kw):
        raise RuntimeError("Nanny failed to start.")

    monkeypatch.setattr(distributed, "LocalCluster", broken)
    with pytest.raises(ClusterError, match=r"failed to start .*Nanny.*if __name__ == '__main__'"):
        dist._client(None, None, 2, 1)
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())  # as in a worker importing the script
    with pytest.raises(InputError, match="ran inside a worker process"):
        dist._client(None, None, 2, 1)


@pytest.mark.needs("distributed")
def test_a_reused_cluster_reads_an_input_written_again_under_its_name(tmp_path, vol, tiny_model):
    """The workers kept the old HDF5 file open under its path: the second run mixed the old scan into the new
    one's labels and marked them complete (57 % of the voxels differed in a QA run)."""
    import distributed
    import h5py

    from napari_xrayseg.core.distributed import segment_distributed

    mpath = save_model(tiny_model, tmp_path / "m.safetensors")
    other = np.ascontiguousarray(vol[:, ::-1, ::-1])
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["data"] = vol
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as c,
        distributed.Client(c) as client,
    ):
        kw = {"client": client, "dataset": "data", **KW}
        first = segment_distributed(tmp_path / "scan.h5", mpath, tmp_path / "a.zarr", **kw)
        np.testing.assert_array_equal(first[...], segment(vol, tiny_model, **KW))
        (tmp_path / "scan.h5").unlink()
        with h5py.File(tmp_path / "scan.h5", "w") as f:  # the scan exported again under its name
            f["data"] = other
        second = segment_distributed(tmp_path / "scan.h5", mpath, tmp_path / "b.zarr", **kw)
        np.testing.assert_array_equal(second[...], segment(other, tiny_model, **KW))


@pytest.mark.needs("distributed")
def test_a_cluster_without_workers_stops_with_one_line(monkeypatch):
    """Every worker gone (jobs past their walltime): dask waits for new ones, and the run hung without a word."""
    import napari_xrayseg.core.distributed as dist

    class Client:
        workers: dict = {}

        def scheduler_info(self):
            return {"workers": self.workers}

    ex = dist.ClusterExecutor(Client(), None)
    monkeypatch.setattr(dist, "NO_WORKERS_TIMEOUT", 0.0)
    assert ex._no_workers(None) is None  # none yet: queued jobs may start later, no limit
    Client.workers = {"tcp://w": {}}
    ex._asked = 0.0
    assert ex._no_workers(123.0) is None  # one came
    Client.workers = {}
    ex._asked = 0.0
    with pytest.raises(ClusterError, match=r"no dask worker left .* kept: start workers and run again with --resume"):
        ex._no_workers(None)


def test_output_stores_are_absolute_paths_for_workers_in_another_folder(tmp_path, vol, tiny_model, monkeypatch):
    """A relative --out reached dask workers started elsewhere as it was: "cannot write out/rel.zarr"."""
    from napari_xrayseg.core.writer import StoreWriter

    seen = []
    real = StoreWriter.__init__

    def spy(self, layout, claims=()):
        seen.append(layout)
        real(self, layout, claims)

    monkeypatch.setattr(StoreWriter, "__init__", spy)
    monkeypatch.chdir(tmp_path)
    segment(vol, tiny_model, out="out/rel.zarr", confidence="maxprob", confidence_out="out/conf.zarr", **KW)
    assert seen and all(os.path.isabs(lay.labels) and os.path.isabs(lay.confidence) for lay in seen)


def test_a_small_slab_with_several_axes_is_warned_about(vol, tiny_model, caplog):
    """--slab 2 --axes zyx chunked the passes' stores in cubes of 2: 70x slower than slab 16, without a word."""
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        segment(vol, tiny_model, axes="zyx", **{**KW, "slab": 4})
    assert "slab 4 with several axes" in caplog.text and "use a slab of 16 or more" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_xrayseg"):
        segment(vol, tiny_model, axes="zyx", **{**KW, "slab": None})  # the default depth
    assert "several axes" not in caplog.text


def test_a_second_run_on_an_output_being_written_is_refused(tmp_path, vol, tiny_model):
    """Two --overwrite runs on one output mixed their slabs (the second deleted the first one's scratch folder
    and wrote on into it): the output being written is locked, the second run refused, the first unharmed."""
    from napari_xrayseg.core.output import claim

    out = tmp_path / "o.zarr"
    old = segment(vol, tiny_model, out=out, **KW)
    first = claim(out, overwrite=True, store=True)
    first.take()  # a run writing the replacement, as segment() holds it
    (first.path / "slab-of-the-first-run").write_text("x")
    with pytest.raises(OutputExistsError, match="is being written by another run right now"):
        segment(vol, tiny_model, out=out, overwrite=True, axis=1, **KW)
    assert (first.path / "slab-of-the-first-run").exists()  # its work was not removed
    with pytest.raises(OutputExistsError, match="being written by another run"):
        segment(vol, tiny_model, out=out, overwrite=True, resume=True, **KW)
    first.release()  # the first run ends (or dies: the system lets go of its lock)
    res = segment(vol, tiny_model, out=out, overwrite=True, **KW)
    np.testing.assert_array_equal(res, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "o.zarr"]  # no lock file left behind


def test_a_refused_or_failed_run_lets_go_of_the_output_at_once(tmp_path, vol, tiny_model):
    """In one process (napari, a notebook) a failed run's output must not stay locked for the retry."""
    out = tmp_path / "o.zarr"
    from faults import NthCheck

    segment(vol, tiny_model, out=out, **KW)
    with pytest.raises(InputError, match="axis") as refused:  # a resume with other settings, refused after the lock
        segment(vol, tiny_model, out=out, resume=True, axis=1, **KW)
    assert refused.value is not None  # its traceback (and the run's frames) still alive here
    segment(vol, tiny_model, out=out, overwrite=True, **KW)
    with pytest.raises(Cancelled) as cancelled:
        segment(vol, tiny_model, out=tmp_path / "c.zarr", cancel=NthCheck(2), **KW)
    assert cancelled.value is not None
    segment(vol, tiny_model, out=tmp_path / "c.zarr", resume=True, **KW)  # not "being written by another run"
    assert output_complete(tmp_path / "c.zarr")


def test_overwrite_with_a_new_confidence_output_resumes_both(tmp_path, vol, tiny_model):
    """--overwrite --confidence over an output without one, cut short: --overwrite --resume said the confidence
    output was missing (it was written in place, the labels beside the old ones) and all slabs were lost."""
    from faults import NthCheck

    out = tmp_path / "o.zarr"
    old = segment(vol, tiny_model, out=out, **KW)
    with pytest.raises(Cancelled):
        segment(vol, tiny_model, out=out, overwrite=True, confidence="maxprob", cancel=NthCheck(4), **KW)
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], old)
    assert not (tmp_path / "o-maxprob.zarr").exists()  # beside, as the labels: nothing half-written in view
    assert (tmp_path / ".o-maxprob.zarr.xrayseg-new").is_dir()
    steps = []
    res, conf = segment(
        vol, tiny_model, out=out, overwrite=True, resume=True, confidence="maxprob",
        progress=lambda p: steps.append(p.step), **KW,
    )  # fmt: skip
    assert steps[0] >= 2  # the finished slabs were kept (the record as it starts counts them done)
    clean, clean_conf = segment(vol, tiny_model, confidence="maxprob", **KW)
    np.testing.assert_array_equal(res, clean)
    np.testing.assert_allclose(conf, clean_conf, atol=1e-6)
    assert output_complete(out) and (tmp_path / "o-maxprob.zarr").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "o-maxprob.zarr", "o.zarr"]


def test_an_output_behind_a_symlink_is_written_through_it(tmp_path, vol, tiny_model):
    """--overwrite replaced the link with a folder beside it (the target went stale); a dangling link was "a file"."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    link = tmp_path / "o.zarr"
    link.symlink_to(scratch / "o.zarr")  # dangling: the output does not exist yet
    first = segment(vol, tiny_model, out=link, **KW)
    assert link.is_symlink() and (scratch / "o.zarr").is_dir()
    again = segment(vol, tiny_model, out=link, overwrite=True, axis=1, **KW)
    assert link.is_symlink() and link.resolve() == (scratch / "o.zarr").resolve()  # the target replaced, not the link
    np.testing.assert_array_equal(zarr.open_array(store=str(scratch / "o.zarr"), mode="r")[...], again)
    assert not np.array_equal(first, again)
    assert sorted(p.name for p in scratch.iterdir()) == ["o.zarr"]


def test_a_refused_run_leaves_the_running_ones_work_alone(tmp_path, vol, tiny_model):
    """Refused, a second run had still removed the first one's scratch folder (a replacement whose original is
    gone): the first run then failed. Nothing of an output being written is repaired or removed."""
    from napari_xrayseg.core.output import claim

    out = tmp_path / "e.zarr"
    first = claim(out, store=True, beside=True)  # a confidence map new to a replaced segmentation: beside
    first.take()
    assert first.path.name == ".e.zarr.xrayseg-new"
    with pytest.raises(OutputExistsError, match="being written by another run"):
        segment(vol, tiny_model, out=out, resume=True, **KW)
    assert first.path.is_dir()
    first.release()


def test_a_file_output_behind_a_symlink_is_written_through_it(tmp_path, tiny_model):
    from napari_xrayseg.core.models import load_model

    target = tmp_path / "store" / "m.safetensors"
    target.parent.mkdir()
    link = tmp_path / "m.safetensors"
    link.symlink_to(target)  # dangling: "exists", naming a target that did not
    save_model(tiny_model, link)
    save_model(tiny_model, link, overwrite=True)  # replaced the link with a file, the target went stale
    assert link.is_symlink() and target.is_file() and load_model(link).info.arch == tiny_model.info.arch
    loop = tmp_path / "loop.zarr"
    loop.symlink_to(loop)
    with pytest.raises(InputError, match="is a symlink that leads nowhere"):
        segment(np.zeros((2, 16, 16), np.float32), tiny_model, out=loop, **KW)


@pytest.mark.needs("distributed")
def test_a_finished_slabs_result_is_never_fetched(tmp_path, vol, tiny_model, monkeypatch):
    """QA: a worker killed after finishing a slab but before the client fetched its result: dask queued the slab
    again and ``result()`` waited for a worker that never came (15 minutes, past the 60 s no-worker limit). The
    slab's range is known from its key, so a finished slab's result is not fetched at all."""
    import distributed

    from napari_xrayseg.core.distributed import segment_distributed

    fetched = []
    original = distributed.Future.result

    def result(self, *a, **k):
        fetched.append(self.status)
        return original(self, *a, **k)

    monkeypatch.setattr(distributed.Future, "result", result)
    mpath = save_model(tiny_model, tmp_path / "m.safetensors")  # the input: in.zarr, written by the fixture
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as c,
        distributed.Client(c) as client,
    ):
        out = segment_distributed(tmp_path / "in.zarr", mpath, tmp_path / "o.zarr", client=client, **KW)
    np.testing.assert_array_equal(out[...], segment(vol, tiny_model, **KW))
    assert "finished" not in fetched


def test_a_name_too_long_for_the_files_beside_it_is_refused_up_front(tmp_path, vol, tiny_model):
    """QA: a legal 245-character name failed with "cannot write .NAME.xrayseg-lock (File name too long)"."""
    import os

    limit = os.pathconf(tmp_path, "PC_NAME_MAX")  # 255 on most file systems
    fits = limit - 14  # ".NAME.xrayseg-lock" adds 14
    out = tmp_path / ("a" * (fits - 4) + ".zarr")  # one character too many
    with pytest.raises(InputError, match=rf"is {fits + 1} bytes: at most {fits} here .* add 14\); choose a short"):
        segment(vol, tiny_model, out=out, **KW)
    cjk = tmp_path / ("日" * ((fits - 4) // 3) + ".zarr")  # QA: counted in characters, a name of bytes passed
    with pytest.raises(InputError, match=rf"is {len(cjk.name.encode())} bytes: at most {fits} here"):
        segment(vol, tiny_model, out=cjk, **KW)
    assert not list(tmp_path.glob("*aaaaaaaaaa*"))
    segment(vol, tiny_model, out=tmp_path / ("a" * (fits - 5) + ".zarr"), **KW)  # the longest: written


def test_a_cluster_job_is_planned_for_the_workers_device_not_the_clients(tmp_path, tiny_model, monkeypatch):
    """A GPU cluster is driven from a login node without a GPU: --device cuda was refused there ("CUDA is not
    available ... use --device cpu"), and the model was loaded onto the client's device (QA, GPU paths)."""
    import torch

    from napari_xrayseg.core.config import SegmentConfig
    from napari_xrayseg.core.inference import build_job

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a login node without a GPU, on any machine
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    image = np.random.default_rng(1261).random((4, 32, 32), dtype=np.float32)
    job = build_job(image, path, SegmentConfig(device="cuda", tile=32), local=False)
    assert job.plans[0].precision == "fp16"  # what auto gives on the workers' CUDA devices
    with pytest.raises(InputError, match="CUDA is not available"):
        build_job(image, path, SegmentConfig(device="cuda", tile=32))  # run here: the device must exist
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        build_job(image, path, SegmentConfig(device="gpu", tile=32), local=False)


def test_the_passes_stores_are_one_slab_deep_along_their_axis_only(tmp_path, vol, tiny_model, monkeypatch):
    """--slab 2 --axes zyx chunked the probability stores in cubes of 2 (221,184 files a pass on 48x192x192,
    478 s instead of 9.7 s): a chunk is one slab deep along its pass's axis and at least 32 across it; the
    labels are those of the default slab's run, and of a run in memory (which summed the passes unrounded:
    the labels of the API without an output differed from the CLI's)."""
    import zarr

    from napari_xrayseg.core.plan import pass_chunks

    seen, make = [], zarr.create_array

    def spy(*a, **k):
        seen.append((str(k.get("store")), tuple(k["chunks"])))
        return make(*a, **k)

    monkeypatch.setattr(zarr, "create_array", spy)
    lab = segment(vol, tiny_model, axes="zyx", out=tmp_path / "o.zarr", **KW)
    n = len(tiny_model.info.classes)
    assert [c for s, c in seen if ".xrayseg-passes" in s] == [(n, 2, 32, 32), (n, 9, 2, 32)]
    ref = segment(vol, tiny_model, axes="zyx", out=tmp_path / "r.zarr", **{**KW, "slab": None})
    np.testing.assert_array_equal(lab, ref)
    np.testing.assert_array_equal(segment(vol, tiny_model, axes="zyx", **KW), ref)
    assert pass_chunks((48, 192, 192), 32, 2) == (32, 32, 32)  # the default slab's chunks stay cubes


def test_a_slab_of_a_run_that_no_longer_writes_the_output_is_not_stored(tmp_path, vol, tiny_model):
    """QA (s44 h3): dask cannot stop a running slab; a cancelled cluster run's slabs finished after it returned and
    wrote by path into the next run's finished output (47 % of its voxels, still 'complete'). Each run writes its id
    into the store it writes; a slab of another run is refused, and a finished output takes none."""
    import pickle

    from napari_xrayseg.core.config import SegmentConfig
    from napari_xrayseg.core.errors import OutputWriteError
    from napari_xrayseg.core.inference import build_job

    out = tmp_path / "out.zarr"
    job = build_job(vol, tiny_model, SegmentConfig.of(None, out=out, **KW))
    stale = pickle.loads(pickle.dumps(job.writer))  # the writer as a dask worker holds it
    slab = {"labels": np.full((2, 40, 48), 7, np.uint8)}
    stale.write(0, (0, 2), (slice(0, 2),), slab)  # its own run: stored
    assert SlabMarkers(out).done() == {(0, 2)}
    job.writer.release()  # cancelled: the client lets go; a slab still runs on a worker
    new = segment(vol, tiny_model, out=out, resume=True, **KW)  # the next run takes the output over and finishes it
    assert output_complete(out) and not (out / ".xrayseg-run").exists()
    segment(vol, tiny_model, out=out, resume=True, **KW)  # a finished output takes no run file (review: read-only)
    assert not (out / ".xrayseg-run").exists()
    with pytest.raises(OutputWriteError, match="another run writes it now, or it is finished"):
        stale.write(0, (2, 4), (slice(2, 4),), slab)
    clean = segment(vol, tiny_model, **KW)
    np.testing.assert_array_equal(zarr.open_array(store=str(out), mode="r")[...], new)
    np.testing.assert_array_equal(new[2:], clean[2:])  # the resumed run's slabs; (0, 2) was the first run's, done
    job2 = build_job(vol, tiny_model, SegmentConfig.of(None, out=tmp_path / "b.zarr", **KW))
    stale2 = pickle.loads(pickle.dumps(job2.writer))
    job2.writer.release()
    segment(vol, tiny_model, out=tmp_path / "b.zarr", overwrite=True, **KW)  # replaced, not resumed
    with pytest.raises(OutputWriteError):
        stale2.write(0, (0, 2), (slice(0, 2),), slab)
    np.testing.assert_array_equal(zarr.open_array(store=str(tmp_path / "b.zarr"), mode="r")[...], clean)


def test_workers_of_a_local_cluster_of_ours_tune_their_allocator(tmp_path, vol, tiny_model, monkeypatch):
    """QA (s44 h3): dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, so each slab ran 1.3-2.3x slower than in
    the CLI, which tunes its own allocator. Workers of a LocalCluster this module starts are ours alone: tuned; a
    user's cluster (a client or a scheduler given) is left as it is."""
    from types import SimpleNamespace

    from napari_xrayseg.core import device, distributed

    specs = []

    def record(job, executor, cancel):
        specs.append(executor.spec)
        return None
        yield

    monkeypatch.setattr(distributed, "run_job", record)
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    distributed.segment_distributed(tmp_path / "in.zarr", path, tmp_path / "a.zarr", client=SimpleNamespace(), **KW)
    distributed.segment_distributed(tmp_path / "in.zarr", path, tmp_path / "b.zarr", workers=1, **KW)
    assert [s.tune_allocator for s in specs] == [False, True]
    called = []
    monkeypatch.setattr(device, "tune_allocator", lambda: called.append(1) or True)
    monkeypatch.setattr(distributed, "_CACHE", {})
    specs[1].job()
    specs[0].job()
    assert called == [1]


def test_a_scheduler_address_that_never_answers_is_refused_in_time(monkeypatch):
    """QA (s44 h3): pointed at a port that takes the connection and never answers (the dashboard's, an HTTP
    server), the run hung for ever: dask's timeout covers the TCP connect only."""
    import socket
    import threading

    from napari_xrayseg.core import distributed

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()  # takes it, says nothing
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 3.0)
    import dask

    before = dask.config.get("scheduler", None)
    try:
        with pytest.raises(InputError, match="did not answer as a dask scheduler within 3 s: check the port"):
            distributed._client(None, f"tcp://127.0.0.1:{server.getsockname()[1]}", None, 1)
    finally:
        server.close()
    assert dask.config.get("scheduler", None) == before  # the half-made client is not dask's scheduler (review)


@pytest.mark.needs("distributed")
def test_a_closed_port_or_an_unknown_host_is_refused_at_once(monkeypatch):
    """QA (s44 h3): nothing listening at the scheduler's port took dask's whole 30 s to be said; an unknown
    host name ended in a bare AssertionError after 10 s."""
    import socket

    from napari_xrayseg.core import distributed

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 3.0)  # dask's retries would outlast it: refused by the probe
    with pytest.raises(
        InputError, match=rf"at tcp://127.0.0.1:{port}: nothing listens at 127.0.0.1:{port} \(connection"
    ):
        distributed._client(None, f"tcp://127.0.0.1:{port}", None, 1)

    def unknown(host, *a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(InputError, match=r"at tcp://nohost.invalid:8786: unknown host 'nohost.invalid' \(Name or"):
        distributed._client(None, "tcp://nohost.invalid:8786", None, 1)


def test_workers_without_the_package_are_refused_and_worker_errors_say_where(tmp_path, vol, tiny_model):
    """QA (s44 h3): workers that cannot import napari_xrayseg died on their first task and the run blamed a
    walltime after a minute; a worker that did not see a path said 'check the path' or 'choose another --out'."""
    import napari_xrayseg.core.distributed as dist

    class Client:
        def __init__(self, found):
            self.found = found

        def run(self, fn):
            assert fn() is True  # the probe runs here: this process has the package
            return self.found

    dist._check_workers(Client({"tcp://a:1": True, "tcp://b:2": True}))
    with pytest.raises(ClusterError, match=r"1 of 2 dask worker\(s\) cannot import napari_xrayseg \(tcp://b:2\)"):
        dist._check_workers(Client({"tcp://a:1": True, "tcp://b:2": False}))
    path = save_model(tiny_model, tmp_path / "m.safetensors")
    with pytest.raises(ClusterError, match="cannot import napari_xrayseg"):  # before the output is touched (review)
        dist.segment_distributed(tmp_path / "in.zarr", path, tmp_path / "x.zarr", client=Client({"w": False}), **KW)
    assert not (tmp_path / "x.zarr").exists()
    missing = dist._on_worker(InputError("image /scratch/a.zarr does not exist: check the path"))
    assert type(missing) is InputError and str(missing).startswith("on a dask worker: image /scratch/a.zarr does")
    assert "a shared file system" in str(missing)
    assert "shared file system" not in str(dist._on_worker(InputError("image holds inf values: replace them")))
    # a real cluster: the probe goes to the workers and finds the package
    dist.segment_distributed(tmp_path / "in.zarr", path, tmp_path / "c.zarr", workers=1, **KW)


def test_the_run_id_guards_the_confidence_map_and_names_a_missing_folder(tmp_path):
    """Review (s44): a late slab still wrote into a confidence map a later run had finished; a worker that did not
    see the output's folder was told another run wrote it."""
    from napari_xrayseg.core.writer import StoreLayout

    labels, conf = tmp_path / "l.zarr", tmp_path / "c.zarr"
    labels.mkdir()
    conf.mkdir()
    lay = StoreLayout(str(labels), "", str(conf), 1, str(labels), False, str(conf), run="abc")
    for p in (labels, conf):
        (p / ".xrayseg-run").write_text("abc")
    assert lay.owned()
    (conf / ".xrayseg-run").write_text("other")  # a later run took the confidence map
    assert not lay.owned()
    gone = StoreLayout(str(tmp_path / "elsewhere.zarr"), "", None, 1, "x", False, run="abc")
    with pytest.raises(FileNotFoundError, match="no such output folder here"):
        gone.owned()
