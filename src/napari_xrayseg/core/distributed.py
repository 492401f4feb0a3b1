"""Segment on a dask.distributed cluster: the same job as :func:`~napari_xrayseg.segment`, one task per slab.

The client builds the job exactly as ``segment`` does (same plan, merger and output
stores, claimed the same way), then :func:`~napari_xrayseg.core.inference.run_job`
drives it with a :class:`ClusterExecutor` instead of the in-process one: each slab is a
task that opens the input and the model *by path* on its worker (each worker loads the
model once and keeps it), runs the slab through the same stages, writes it into the
shared stores and leaves the slab's done-marker. Output chunks never straddle two
slabs, so tasks never write the same chunk; the result is identical to the
single-process run, in every mode (one axis, orthoplane, confidence, TTA, pyramid),
and a run that dies is finished with ``resume=True`` (with or without a cluster).

Use ``workers=N`` for a local cluster on this machine, ``scheduler="tcp://host:8786"``
for a running cluster (e.g. from dask-jobqueue on SLURM; see docs/cluster.md), or
pass your own ``client``. The input and output paths must be visible to every
worker (a shared file system).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import SegmentConfig, python_numbers
from .errors import ClusterError, InputError
from .inference import SegmentJob, _channel_input, build_job, run_job
from .level import LevelledView
from .merger import LabelMerger, ProbMerger
from .output import claim
from .plan import SegmentPlan
from .progress import CancelToken, Progress, ProgressCallback, check, drain
from .writer import StoreLayout, StoreWriter, resume_hint

__all__ = ["ClusterExecutor", "iter_segment_distributed", "segment_distributed"]

log = logging.getLogger(__name__)

# Per-worker-process cache: model, input and output are opened once per worker, not once per task.
# A long-lived worker (an external scheduler, a reused client) serves many runs: the oldest
# entries go once there are more than _CACHE_MAX.
_CACHE: dict[tuple[Any, ...], Any] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 16


def _cached(key: tuple[Any, ...], make: Any) -> Any:
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
            while len(_CACHE) > _CACHE_MAX:
                _CACHE.pop(next(iter(_CACHE)))
        return _CACHE[key]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the job: paths and the picklable stages."""

    run: str
    image: str
    dataset: str | None
    model: str
    device: str
    torch_threads: int | None
    plans: tuple[SegmentPlan, ...]
    merger: LabelMerger | ProbMerger
    layout: StoreLayout
    config: SegmentConfig
    levels: tuple[tuple[float, float], ...] | None = None  # a normalize="slice" model's, computed once, here
    # workers of a LocalCluster this module started are ours alone, as a CLI process is: their allocator keeps
    # freed activations (dask sets MALLOC_TRIM_THRESHOLD_=65536: each slab ran 1.3-2.3x slower than in the CLI)
    tune_allocator: bool = False

    def job(self) -> SegmentJob:
        """The job on this worker (predictor and input cached per process)."""
        import torch

        from .device import resolve_device
        from .io import open_volume
        from .models import load_model
        from .normalize import mark_missing
        from .predictor import SlicePredictor

        if self.torch_threads:
            _cached(("threads", self.torch_threads), lambda: torch.set_num_threads(self.torch_threads) or True)
        if self.tune_allocator:
            from .device import tune_allocator

            _cached(("allocator",), lambda: tune_allocator() or True)
        plan = self.plans[0]
        mp = Path(self.model)
        st = mp.stat()

        def make_predictor() -> SlicePredictor:
            dev = resolve_device(self.device)
            return SlicePredictor(
                load_model(mp, device=dev),
                device=dev,
                tile=plan.tile,
                overlap=plan.overlap,
                batch=plan.batch,
                blend=plan.blend,
                precision=plan.precision,
            )

        # every setting the predictor holds is in the key: a later run with another overlap (say) on
        # the same worker got the first run's predictor, and its labels, silently
        key = (str(mp), st.st_mtime_ns, st.st_size, self.device, plan.tile, plan.overlap, plan.batch, plan.blend)
        pred = _cached(("model", *key, plan.precision), make_predictor)
        nodata = self.config.nodata  # voxels equal to it are without data, as build_job reads them here
        image = _cached(  # as build_job reads it: no-data marked, a multi-channel model's channels split
            # the file's identity too: a scan written again under its name was read from the old handle
            ("image", self.image, _identity(self.image), self.dataset, nodata, str(mp)),
            lambda: self._levelled(
                _channel_input(
                    mark_missing(open_volume(self.image, dataset=self.dataset), nodata),
                    pred.model,
                    self.config.channel_axis,
                )
            ),
        )
        writer = _cached(("writer", self.run), lambda: StoreWriter(self.layout))
        return SegmentJob(image, list(self.plans), self.merger, writer, self.config, pred)

    def _levelled(self, image: Any) -> Any:
        """``image`` levelled with the client's levels where the model levels its inputs (normalize="slice")."""
        return image if self.levels is None else LevelledView(image, np.asarray(self.levels))


def _identity(path: str | os.PathLike) -> tuple[int, ...]:
    """A file's (or a store folder's) inode, size and modification time, as the worker sees it: () if absent.

    A zarr store is a folder whose own times change when chunks are added or removed; its
    ``zarr.json`` / ``.zarray`` is rewritten when the array is made again.
    """
    p = Path(path)
    out: list[int] = []
    for f in (p, p / "zarr.json", p / ".zarray", p / ".zgroup"):
        try:
            st = f.stat()
        except OSError:
            continue
        out += [st.st_ino, st.st_size, st.st_mtime_ns]
    return tuple(out)


def _run_slab(spec: WorkerSpec, i: int, r: tuple[int, int]) -> tuple[int, int]:
    """Worker side: pass ``i``, slab ``r`` of the job, into the shared stores; return ``r``."""
    job = spec.job()
    job.run_slab(i, r, job.plans[i].read(job.image, r))
    return r


#: seconds a run waits with no dask worker left (jobs past their walltime) before it stops and says so
NO_WORKERS_TIMEOUT = 60.0


class ClusterExecutor:
    """Runs a job's slabs as dask tasks, yielding each as it finishes (cancel is polled)."""

    where = " on the cluster"

    def _no_workers(self, since: float | None) -> float | None:
        """When the scheduler has had no worker for :data:`NO_WORKERS_TIMEOUT` s, raise; else since when it has none.

        With every worker gone (a batch system's jobs reached their walltime) dask waits for
        new ones without end: the run hung at its last percentage without a word. The clock
        starts only once this run has seen a worker: before that, the workers' jobs may still
        wait in a queue (dask-jobqueue) or an adaptive cluster may be scaling up from none.
        """
        now = time.monotonic()
        if now - self._asked < 1.0:  # asked at most once a second
            return since
        self._asked = now
        try:
            workers = self.client.scheduler_info().get("workers") or {}
        except Exception:  # noqa: BLE001 - a lost scheduler is reported by the futures themselves
            return None
        if workers:
            self._seen_workers = True
            return None
        if not self._seen_workers:  # none yet: a batch system's jobs may wait in its queue for hours
            return None
        since = now if since is None else since
        if now - since >= NO_WORKERS_TIMEOUT:
            raise ClusterError(
                f"no dask worker left on the cluster for {NO_WORKERS_TIMEOUT:.0f} s (their jobs ended or died); "
                "the slabs finished so far are kept: start workers and run again with --resume"
            )
        return since

    def __init__(self, client: Any, spec: WorkerSpec, cancel: CancelToken | None = None) -> None:
        self.client, self.spec, self.cancel = client, spec, cancel
        self._asked = 0.0  # when the scheduler was last asked for its workers
        self._seen_workers = False  # whether this run has seen a worker (until then, no time limit)

    def run(self, i: int, todo: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        """Submit the slabs ``todo`` of pass ``i``; yield each range once a worker wrote it.

        Raises
        ------
        ClusterError
            When a worker died running a slab (``KilledWorker``): finished slabs are kept.
        """
        from concurrent.futures import CancelledError  # distributed's FutureCancelledError (2024.7+) is one

        from distributed import KilledWorker, as_completed

        # only the slabs not yet done are held: a finished one's result is released at once, so a worker
        # lost later does not make dask compute the slabs it had finished again
        ranges = {f"xrayseg-{self.spec.run}-p{i}-{r[0]}-{r[1]}": r for r in todo}
        futures = {
            key: self.client.submit(_run_slab, self.spec, i, r, pure=False, key=key) for key, r in ranges.items()
        }
        try:
            pending = as_completed(list(futures.values()))
            alone_since: float | None = None  # since when the scheduler has had no worker
            while not pending.is_empty():
                check(self.cancel)  # polled, so a cancel does not wait for the next slab to finish
                finished = pending.next_batch(block=False)
                if not finished:
                    alone_since = self._no_workers(alone_since)
                    time.sleep(0.05)
                    continue
                for fut in finished:
                    futures.pop(fut.key, None)
                    if fut.status not in ("error", "cancelled"):
                        # the slab is written and marked done: its range is known from its key. Its result is
                        # not fetched: held by a worker that died since, dask would compute it again, and
                        # result() waited for a worker that never came (QA: a hang of 15 minutes)
                        fut.release()
                        yield ranges[fut.key]
                        continue
                    try:
                        fut.result(timeout=60)  # re-raises the task's error here
                    except KilledWorker as e:
                        raise ClusterError(
                            f"a dask worker died running a slab ({str(e).split('. ')[0]}); the slabs finished so far "
                            "are kept: run "
                            "again with --resume, with fewer --threads-per-worker or a smaller --batch/--tile if "
                            "the workers run out of memory"
                        ) from e
                    except CancelledError as e:  # the scheduler went away, or the client was closed
                        if self.cancel is not None and self.cancel.cancelled:
                            raise
                        raise ClusterError(
                            "lost the dask scheduler (or the client was closed) mid-run; the slabs finished so far "
                            "are kept: run again with --resume (on a cluster or not)"
                        ) from e
                    except InputError as e:  # often a path the worker does not see
                        raise _on_worker(e) from e
                    raise ClusterError(f"a slab failed on the cluster ({fut.status}); run again with --resume")
        except BaseException:
            try:
                self.client.cancel(list(futures.values()))
            except Exception:  # noqa: BLE001 - a closed client or lost scheduler: nothing left to cancel
                log.debug("could not cancel the submitted slabs", exc_info=True)
            raise


_SHARED = "every worker must reach the input, the model and the output at the same paths: a shared file system"


def _on_worker(e: InputError) -> InputError:
    """A slab's input error raised on a worker, said to be so (with the shared-file-system hint for a path).

    QA s44: "check the path" sent users the wrong way where a worker did not see a file the client
    sees. Other errors keep their type (the CLI's exit codes: review) and words.
    """
    text = str(e.args[0]) if e.args else str(e)
    pathish = any(w in text for w in ("exist", "No such file", "ermission"))
    return type(e)(f"on a dask worker: {text}" + (f" ({_SHARED})" if pathish else ""))


def _check_workers(client: Any) -> None:
    """Refuse a cluster whose workers cannot import napari_xrayseg, naming them and the fix.

    Such a worker cannot read a slab's task: it died, every one of them, and the run said after a
    minute that the workers' jobs had ended (QA s44). The probe is pickled by value: it needs
    nothing of this package on the worker.
    """

    def probe() -> bool:
        import importlib.util

        return importlib.util.find_spec("napari_xrayseg") is not None

    try:
        found = client.run(probe)
    except Exception:  # noqa: BLE001 - no worker yet (a batch queue): the run's own checks say what follows
        log.debug("could not ask the workers for napari_xrayseg", exc_info=True)
        return
    missing = sorted(str(a) for a, ok in (found or {}).items() if not ok)
    if missing:
        raise ClusterError(
            f"{len(missing)} of {len(found)} dask worker(s) cannot import napari_xrayseg ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): install it in the workers' environment (pip install "
            "'napari-xrayseg[distributed]', the version the client runs)"
        )


#: seconds to wait for a dask scheduler to answer (dask's own timeout covers the TCP connect only)
CONNECT_TIMEOUT = 35.0
#: seconds a scheduler's host may take to accept the TCP connection before it is taken for unreachable
PROBE_TIMEOUT = 15.0


def _probe(scheduler: str) -> None:
    """An OSError at once where nothing listens at a ``tcp://`` address or its host has no address.

    dask retries a refused connection for its whole 30 s (QA s44), and an unknown host name ended
    in a bare AssertionError after 10 s. Other schemes (tls, ucx, inproc) are left to dask.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, where = parse_address(scheduler)
        host, port = parse_host_port(where)
    except (ValueError, TypeError):
        return  # a malformed address: dask's own message says what is wrong
    if scheme != "tcp" or not port:
        return
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OSError(f"unknown host {host!r} ({e.strerror})") from e
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
    except ConnectionRefusedError as e:
        raise OSError(f"nothing listens at {host}:{port} (connection refused)") from e
    except TimeoutError as e:
        raise OSError(f"{host}:{port} did not take the connection within {PROBE_TIMEOUT:.0f} s") from e


def _connect(client_class: Any, scheduler: str) -> Any:
    """``Client(scheduler)``, or an :class:`InputError` when the address takes the connection and never answers.

    dask's ``timeout`` covers the TCP connect, not its handshake: pointed at the scheduler's dashboard
    port (8787 for 8786) or any HTTP server, the run hung for ever, and a batch system's SIGTERM did not
    end it (QA s44). The connection is made in a thread given :data:`CONNECT_TIMEOUT` seconds.
    """
    _probe(scheduler)
    got: dict[str, Any] = {}

    def connect() -> None:
        try:
            got["client"] = client_class(scheduler, timeout="30s")
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            got["error"] = e

    import dask

    before = dask.config.get("scheduler", None)
    t = threading.Thread(target=connect, name="xrayseg-connect", daemon=True)
    t.start()
    t.join(CONNECT_TIMEOUT)
    if t.is_alive():
        # the half-made client made itself dask's scheduler as it began: later dask work hung (review)
        dask.config.set(scheduler=before)
        raise InputError(
            f"{scheduler} took the connection but did not answer as a dask scheduler within {CONNECT_TIMEOUT:.0f} s: "
            "check the port (a scheduler listens on 8786 by default; 8787 is its dashboard)"
        )
    if "error" in got:
        raise got["error"]
    return got["client"]


def _client(client: Any, scheduler: str | None, workers: int | None, threads_per_worker: int) -> tuple[Any, list]:
    """The client to use, and the objects this module created (to close afterwards)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise InputError(
            "running on a cluster needs dask.distributed: pip install 'napari-xrayseg[distributed]'"
        ) from e
    if client is not None:
        return client, []
    if scheduler:
        try:
            c = _connect(Client, scheduler)
        except (OSError, TimeoutError, ValueError) as e:  # unreachable, or a malformed address
            raise InputError(
                f"cannot reach the dask scheduler at {scheduler}: {e}; check the address "
                "(e.g. tcp://host:8786) and that the scheduler runs"
            ) from e
        except MemoryError as e:  # a service that is not dask answered: its bytes read as a huge message
            raise InputError(
                f"{scheduler} answered, but not as a dask scheduler: check the address and port (e.g. tcp://host:8786)"
            ) from e
        return c, [c]
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"workers {workers!r} must be a positive number of local worker processes")
    import multiprocessing

    guard = (
        "in a script, call it under `if __name__ == '__main__':`: the workers start by importing the script "
        "again (docs/cluster.md)"
    )
    child = multiprocessing.parent_process() is not None or getattr(multiprocessing.current_process(), "_inheriting", 0)
    if child:  # a worker importing the script as it starts: it must not start a cluster of its own
        raise InputError(f"segment_distributed(workers=...) ran inside a worker process: {guard}")
    try:
        cluster = LocalCluster(  # no dashboard; its HTTP server on a free port (None took 8787, warned when in use)
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
            # the workers' own warnings ("Async instruction ... ended with CancelledError" for each slab a
            # cancel cut short) are noise to a user: their errors still show
            silence_logs=logging.CRITICAL,  # a task's error reaches the client, which says it in one line
        )
    except Exception as e:  # "Nanny failed to start" and kin: name the usual cause
        raise ClusterError(
            f"the local cluster's {workers} worker(s) failed to start ({type(e).__name__}: {str(e)[:200]}); {guard}"
        ) from e
    c = Client(cluster)
    return c, [c, cluster]


def iter_segment_distributed(
    image: str | os.PathLike,
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dataset: str | None = None,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    torch_threads: int | None = None,
    config: SegmentConfig | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> Generator[Progress, None, Any]:
    """Generator form of :func:`segment_distributed`: yields a :class:`Progress` per finished slab."""
    from .io import open_volume

    if not isinstance(model, (str, os.PathLike)):
        raise InputError(
            "on a cluster the model must be a file path (workers load it): save it first with "
            "save_model(model, 'model.safetensors')"
        )
    if not isinstance(image, (str, os.PathLike)):
        raise InputError(
            "on a cluster the image must be a path (zarr, TIFF, HDF5, .npy) that every worker can "
            "read, not an in-memory array"
        )
    cfg = SegmentConfig.of(config, out=out, **options)
    claim(out, overwrite=cfg.overwrite, resume=cfg.resume, inputs=[image, model], hint=resume_hint)  # before connecting
    c, owned = _client(client, scheduler, workers, threads_per_worker)  # a refused cluster touches no output
    try:
        _check_workers(c)  # before the output is created (review: a refusal left an empty, locked output)
        vol = open_volume(image, dataset=dataset)
        mpath = Path(model).resolve()
        job = build_job(vol, mpath, cfg, inputs=[image], local=False)
        # One arithmetic for the whole output, decided here for the requested device (so results do
        # not depend on which worker ran a slab); on a mixed cluster pass precision explicitly.
        spec = WorkerSpec(
            run=uuid.uuid4().hex[:8],
            image=str(Path(image).resolve()) if Path(str(image)).exists() else str(image),
            dataset=dataset,
            model=str(mpath),
            device=cfg.device,
            torch_threads=torch_threads,
            plans=tuple(job.plans),
            merger=job.merger,
            layout=job.writer.layout,  # type: ignore[union-attr]
            config=job.config,  # as build_job resolved it (the model's no-data value, unless given)
            # levelled slice by slice (normalize="slice"): the client's levels, not one more read per worker
            levels=tuple(map(tuple, job.image.levels.tolist())) if isinstance(job.image, LevelledView) else None,
            tune_allocator=len(owned) > 1,  # a LocalCluster of ours (owned: it and its client)
        )
        return (yield from run_job(job, ClusterExecutor(c, spec, cancel), cancel))
    finally:
        if len(owned) > 1:  # a LocalCluster this module started (a --scheduler's cluster is not ours to wait on)
            _settle(owned[0])
        for o in owned:
            o.close()


def _settle(client: Any, timeout: float = 30.0) -> None:
    """Wait (bounded) until the workers of a cluster this module started run no task.

    dask cannot stop a task that runs: a slab cancelled mid-way (Ctrl-C, a cancel, an
    error) runs to its end. Closing the scheduler under it made the worker log a
    ``CommClosedError`` traceback at its next heartbeat.
    """
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and any(client.processing().values()):
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - a closed client or lost scheduler: nothing to wait for
        log.debug("could not ask the scheduler what runs", exc_info=True)


@python_numbers
def segment_distributed(
    image: str | os.PathLike,
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dataset: str | None = None,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    torch_threads: int | None = None,
    config: SegmentConfig | None = None,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Any:
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
    config, cancel, progress, **options
        As in :func:`~napari_xrayseg.segment` (every mode: ``axes``, ``confidence``,
        ``tta``, ``pyramid``, ``resume``, ``overwrite``...).

    Returns
    -------
    array or (array, array)
        The labels in ``out`` (a zarr array for zarr input), as :func:`~napari_xrayseg.segment`.

    Raises
    ------
    InputError
        Bad input (as in ``segment``), an in-memory image or model, an unreachable scheduler.
    OutputExistsError
        If ``out`` exists and neither ``overwrite`` nor ``resume`` is given.
    ClusterError
        If a worker died running a slab.
    """
    return drain(
        iter_segment_distributed(
            image,
            model,
            out,
            dataset=dataset,
            client=client,
            scheduler=scheduler,
            workers=workers,
            threads_per_worker=threads_per_worker,
            torch_threads=torch_threads,
            config=config,
            cancel=cancel,
            **options,
        ),
        progress,
    )
