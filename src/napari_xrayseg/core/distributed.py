"""Segment on a dask.distributed cluster: one task per slab, all writing to one zarr store.

The client plans the run exactly as :func:`~napari_xrayseg.core.inference.segment`
does (same slabs, tiles and normalisation), creates the output, and submits one task
per slab. A task opens the input and the model *by path* on its worker (each worker
loads the model once and keeps it), runs the slab, writes it into the shared zarr
array and leaves the slab's done-marker. Output chunks are one slab deep along the
slicing axis, so no two tasks ever write the same chunk; the result is identical to
the single-process run, and a run that dies can be finished with ``resume=True``
(with or without a cluster).

Use ``workers=N`` for a local cluster on this machine, ``scheduler="tcp://host:8786"``
for a running cluster (e.g. from dask-jobqueue on SLURM; see docs/cluster.md), or
pass your own ``client``. The input and output paths must be visible to every
worker (a shared file system).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

from .config import SegmentConfig
from .errors import InputError
from .progress import CancelToken, Progress, ProgressCallback, check, drain

__all__ = ["iter_segment_distributed", "segment_distributed"]

log = logging.getLogger(__name__)
_D = SegmentConfig()

# Per-worker-process cache: model, input and output are opened once per worker, not once per task.
_CACHE: dict[tuple[Any, ...], Any] = {}
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple[Any, ...], make: Any) -> Any:
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def _run_slab(task: dict[str, Any], r: tuple[int, int]) -> tuple[int, int]:
    """Worker side: segment slab ``r`` of ``task``'s plan into the shared output; return ``r``."""
    import torch
    import zarr

    from .device import resolve_device
    from .inference import SlabMarkers, SlicePredictor
    from .io import open_volume
    from .models import load_model

    plan = task["plan"]
    if task.get("torch_threads"):
        _cached(("threads", task["torch_threads"]), lambda: torch.set_num_threads(task["torch_threads"]) or True)
    mp = Path(task["model"])
    st = mp.stat()

    def make_predictor() -> SlicePredictor:
        dev = resolve_device(task["device"])
        return SlicePredictor(load_model(mp, device=dev), device=dev, tile=plan.tile, overlap=plan.overlap,
                              batch=plan.batch, blend=plan.blend, precision=plan.precision)

    pred = _cached(("model", str(mp), st.st_mtime_ns, st.st_size, task["device"], plan.tile), make_predictor)
    image = _cached(("image", task["image"], task["dataset"]), lambda: open_volume(task["image"],
                                                                                   dataset=task["dataset"]))
    target = zarr.open_array(store=task["out"], path=task["out_path"], mode="r+")
    plan.write(target, r, plan.run(pred, plan.read(image, r), r))
    SlabMarkers(task["out"]).mark(r)
    return r


def _client(client: Any, scheduler: str | None, workers: int | None, threads_per_worker: int) -> tuple[Any, list]:
    """The client to use, and the objects this module created (to close afterwards)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise InputError("running on a cluster needs dask.distributed: pip install "
                         "'napari-xrayseg[distributed]'") from e
    if client is not None:
        return client, []
    if scheduler:
        try:
            c = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise InputError(f"cannot reach the dask scheduler at {scheduler}: {e}; check the address "
                             "(e.g. tcp://host:8786) and that the scheduler runs") from e
        return c, [c]
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"workers {workers!r} must be a positive number of local worker processes")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    c = Client(cluster)
    return c, [c, cluster]


def iter_segment_distributed(image: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike, *,
                             dataset: str | None = None, client: Any = None, scheduler: str | None = None,
                             workers: int | None = None, threads_per_worker: int = 1,
                             torch_threads: int | None = None, axis: int = _D.axis, tile: int | None = None,
                             overlap: float = _D.overlap, batch: int = _D.batch, device: str = _D.device,
                             slab: int | None = _D.slab, blend: str = _D.blend, overwrite: bool = False,
                             resume: bool = False, pyramid: bool = False, precision: str = _D.precision,
                             cancel: CancelToken | None = None) -> Generator[Progress, None, Any]:
    """Generator form of :func:`segment_distributed`: yields a :class:`Progress` per finished slab."""
    from .inference import _resolved_norm, open_output, plan_segment, read_output_meta
    from .io import open_volume
    from .models import load_model

    if not isinstance(model, (str, os.PathLike)):
        raise InputError("on a cluster the model must be a file path (workers load it): save it first with "
                         "save_model(model, 'model.safetensors')")
    if not isinstance(image, (str, os.PathLike)):
        raise InputError("on a cluster the image must be a path (zarr, TIFF, HDF5, .npy) that every worker can "
                         "read, not an in-memory array")
    mpath = Path(model).resolve()
    vol = open_volume(image, dataset=dataset)
    m = load_model(mpath, device="cpu")
    norm = None
    if resume and Path(out).exists() and m.info.normalization.get("low") is None:
        norm = (read_output_meta(out) or {}).get("normalization")
    from .device import resolve_device, resolve_precision

    # One arithmetic for the whole output, decided here for the requested device (so results do
    # not depend on which worker ran a slab); on a mixed cluster pass precision explicitly.
    prec = resolve_precision(precision, resolve_device(device))
    plan = plan_segment(vol, m, axis=axis, tile=tile, overlap=overlap, batch=batch, slab=slab, blend=blend,
                        normalization=norm if norm is not None else _resolved_norm(m, vol), precision=prec)
    _, done_slabs = open_output(out, plan, m, overwrite=overwrite, resume=resume, pyramid=pyramid)
    todo = [r for r in plan.ranges if r not in done_slabs]
    task = {"plan": plan, "image": str(Path(image).resolve()) if Path(str(image)).exists() else str(image),
            "dataset": dataset, "model": str(mpath), "out": str(Path(out).resolve()),
            "out_path": "0" if pyramid else "", "device": device, "torch_threads": torch_threads}

    c, owned = _client(client, scheduler, workers, threads_per_worker)
    from distributed import as_completed

    total = plan.n
    done = total - sum(b - a for a, b in todo)
    t0 = time.perf_counter()
    futures = []
    try:
        log.info("segmenting %s on %s: %d slabs to do", plan.shape, c, len(todo))
        run_id = uuid.uuid4().hex[:8]
        futures = [c.submit(_run_slab, task, r, pure=False, key=f"xrayseg-slab-{r[0]}-{r[1]}-{run_id}")
                   for r in todo]
        ran = 0
        vox = plan.slice_shape[0] * plan.slice_shape[1]
        pending = as_completed(futures)
        while not pending.is_empty():
            check(cancel)  # polled, so a cancel does not wait for the next slab to finish
            finished = pending.next_batch(block=False)
            if not finished:
                time.sleep(0.1)
                continue
            for fut in finished:
                a, b = fut.result()  # re-raises a task's error here
                done += b - a
                ran += b - a
                rate = ran * vox / max(time.perf_counter() - t0, 1e-9)
                yield Progress(done, total, f"slices {done}/{total} on the cluster ({rate / 1e6:.2f} Mvox/s)",
                               {"voxels_per_s": float(rate)})
        from .inference import finish_output

        finish_output(out, cancel=cancel)
    except BaseException:
        if futures:
            c.cancel(futures)
        raise
    finally:
        for o in owned:
            o.close()
    from .inference import output_levels

    return output_levels(out)[0]


def segment_distributed(image: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike, *,
                        dataset: str | None = None, client: Any = None, scheduler: str | None = None,
                        workers: int | None = None, threads_per_worker: int = 1, torch_threads: int | None = None,
                        axis: int = _D.axis, tile: int | None = None, overlap: float = _D.overlap,
                        batch: int = _D.batch, device: str = _D.device, slab: int | None = _D.slab,
                        blend: str = _D.blend, overwrite: bool = False, resume: bool = False,
                        pyramid: bool = False, precision: str = _D.precision, cancel: CancelToken | None = None,
                        progress: ProgressCallback | None = None) -> Any:
    """Segment a volume on a dask.distributed cluster; same result as :func:`~napari_xrayseg.segment`.

    Parameters
    ----------
    image : path-like
        Input volume (zarr, TIFF, HDF5, .npy) on a file system every worker can read.
    model : path-like
        Model file; each worker loads it once.
    out : path-like
        Output zarr (on a shared file system).
    dataset : str, optional
        Array inside a zarr group / HDF5 file.
    client : distributed.Client, optional
        Use this client (left open).
    scheduler : str, optional
        Address of a running scheduler, e.g. ``"tcp://10.0.0.5:8786"``.
    workers : int, optional
        Start a local cluster with this many worker processes (when neither ``client``
        nor ``scheduler`` is given).
    threads_per_worker : int
        Threads per local worker (tasks run at once per worker).
    torch_threads : int, optional
        ``torch.set_num_threads`` on each worker (e.g. cores / workers).
    axis, tile, overlap, batch, device, slab, blend, overwrite, resume, pyramid, precision, cancel, progress
        As in :func:`~napari_xrayseg.segment`.

    Returns
    -------
    zarr.Array
        The full-resolution labels in ``out``.

    Raises
    ------
    InputError
        Bad input (as in ``segment``), an in-memory image or model, an unreachable scheduler.
    OutputExistsError
        If ``out`` exists and neither ``overwrite`` nor ``resume`` is given.
    """
    return drain(iter_segment_distributed(
        image, model, out, dataset=dataset, client=client, scheduler=scheduler, workers=workers,
        threads_per_worker=threads_per_worker, torch_threads=torch_threads, axis=axis, tile=tile, overlap=overlap,
        batch=batch, device=device, slab=slab, blend=blend, overwrite=overwrite, resume=resume, pyramid=pyramid,
        precision=precision, cancel=cancel), progress)
