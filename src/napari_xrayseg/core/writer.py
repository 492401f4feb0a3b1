"""The writer stage of segmentation: output stores, done-markers, pyramid, metadata, write errors.

A run writes into zarr stores claimed by :mod:`napari_xrayseg.core.output` (so an
existing output is replaced only once the new one is complete):

- the labels (uint8): an array, or with ``pyramid`` an OME-Zarr group whose array
  ``0`` holds them and ``1, 2, ...`` are 2x downsampled levels;
- the confidence (float32), when asked for;
- for a run of several passes (orthoplane), each early pass's class probabilities
  (float16, in ``.xrayseg-passes/`` inside the labels store, one slab deep along the
  pass's axis, :func:`pass_chunks`); removed when the run completes.

Every slab gets a done-marker after its data is written (per pass), so a run that is
cancelled, crashes or is killed resumes with exactly the slabs it lacks, and gives the
same result as an uninterrupted run. The ``napari_xrayseg`` attribute of the labels
records the model and settings; ``complete`` turns true at the very end.

Physical metadata travels with every output: the ``napari_xrayseg`` attributes of the labels
and of the confidence hold ``voxel_size`` (z, y, x) and ``unit`` (and the labels ``classes``
and ``class_names``); a pyramid group also carries OME-NGFF 0.5 ``ome`` attributes: axes
with their unit, a ``scale`` per level (2x per level) and ``image-label`` properties (a name
and a colour per class), which napari, OME-Zarr readers and
:func:`~napari_xrayseg.core.io.read_voxel_size` / :func:`~napari_xrayseg.core.io.read_class_names` read back.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OutputWriteError, write_error
from .normalize import MissingView
from .ome import multiscale_levels
from .output import _CREATING, Claim, released_on_error, remove_path
from .plan import pass_chunks
from .progress import CancelToken, check
from .units import ngff_label_attrs

__all__ = [
    "OUTPUT_ATTR",
    "MemoryWriter",
    "SlabMarkers",
    "StoreLayout",
    "StoreWriter",
    "output_complete",
    "output_levels",
    "read_output_meta",
    "input_digest",
    "sibling_path",
    "trained_on_of",
    "write_pyramid",
]

log = logging.getLogger(__name__)
OUTPUT_ATTR = "napari_xrayseg"
PASSES = ".xrayseg-passes"
#: a file in an output while its stores are being created: a resume of it starts afresh (and
#: --overwrite may replace it: output._CREATING)
CREATING = _CREATING
#: a file in an output being written, holding the id of the run that writes it: a slab of another run
#: (a cancelled cluster run's, still running on a worker) is not stored (:meth:`StoreWriter.write`)
RUN = ".xrayseg-run"

# what must match for --resume to continue an output (the rest is informative), with the value
# an output written before the key existed stands for
RESUME_KEYS = {
    "shape": None,
    "axis": None,
    "slab": None,
    "tile": None,
    "overlap": None,
    "blend": None,
    "context": None,
    "classes": None,
    "model_sha256": None,
    "normalization": None,
    "pyramid": None,
    "precision": None,
    "axes": None,
    "confidence": None,
    "tta": False,
    "nodata": None,
}


def _axes(ndim: int) -> tuple[str, ...]:
    """The arrays' ``dimension_names`` (OME-Zarr 0.5 requires them, as its axes' names)."""
    return ("z", "y", "x")[-ndim:]


def sibling_path(out: str | os.PathLike, suffix: str) -> Path:
    """``DIR/NAME{suffix}.zarr`` beside ``DIR/NAME.zarr``."""
    p = Path(out)
    stem = p.name[:-5] if p.name.endswith(".zarr") else p.name
    return p.with_name(f"{stem}{suffix}.zarr")


def read_output_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``napari_xrayseg`` attributes of an output written by :func:`~napari_xrayseg.segment`, or None."""
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception:  # not a zarr store at all
        return None
    meta = node.attrs.get(OUTPUT_ATTR)
    return dict(meta) if isinstance(meta, dict) else None


def output_complete(path: str | os.PathLike) -> bool:
    """Whether a zarr output written by :func:`~napari_xrayseg.segment` was finished (not cancelled or crashed)."""
    meta = read_output_meta(path)
    return bool(meta and meta.get("complete", False))


def output_levels(path: str | os.PathLike) -> list[Any]:
    """The arrays of an output written by :func:`~napari_xrayseg.segment`: ``[labels]``, or every pyramid level."""
    import zarr

    node = zarr.open(store=str(path), mode="r")
    if isinstance(node, zarr.Array):
        return [node]
    return multiscale_levels(node) or [node["0"]]


def write_pyramid(
    group: Any,
    *,
    min_side: int = 256,
    max_levels: int = 8,
    cancel: CancelToken | None = None,
    meta: dict[str, Any] | None = None,
) -> list[Any]:
    """Add downsampled levels ``1, 2, ...`` to an OME-Zarr group whose array ``0`` holds labels.

    Each level takes every second voxel of the one before along every axis (nearest
    neighbour: label values stay valid, no new classes appear), until the largest side
    is at most ``min_side``. Built out of core with dask. Writes OME-Zarr 0.5
    ``multiscales`` metadata, so napari (and other OME-Zarr readers) can browse it: with
    ``meta`` (the output's ``napari_xrayseg`` attributes) the axes carry ``meta["unit"]``,
    each level a scale of ``meta["voxel_size"]`` times ``2**level``, and ``image-label``
    the names of ``meta["classes"]``.
    """
    import dask.array as da

    levels = [group["0"]]
    ndim = len(levels[0].shape)
    while len(levels) < max_levels and max(levels[-1].shape) > min_side:
        check(cancel)
        prev = da.from_zarr(levels[-1])
        nxt = prev[(slice(None, None, 2),) * ndim]
        chunks = tuple(min(s, 64 if ndim == 3 else 512) for s in nxt.shape)
        name = str(len(levels))
        if name in group:
            del group[name]
        arr = group.create_array(
            name, shape=nxt.shape, chunks=chunks, dtype="uint8", fill_value=0, dimension_names=_axes(ndim)
        )
        da.store(nxt.rechunk(chunks), arr, lock=False)
        levels.append(arr)
    group.attrs["ome"] = _ome_attrs(meta or {}, len(levels), ndim)
    return levels


def _ome_attrs(meta: dict[str, Any], levels: int, ndim: int) -> dict[str, Any]:
    """The OME-NGFF ``ome`` attributes of a label group of ``levels`` levels, from an output's metadata."""
    classes = meta.get("classes")
    names = meta.get("class_names")
    return _jsonable(
        ngff_label_attrs(
            levels,
            meta.get("voxel_size"),
            meta.get("unit"),
            ndim=ndim,
            classes=classes,
            class_names=names if names is not None and classes is not None and len(names) == len(classes) else None,
            origin=meta.get("origin"),
        )
    )


class SlabMarkers:
    """Per-slab done-markers of an output store, written after the slab's data.

    A marker is an empty file ``<out>/.xrayseg-done/[<stage>/]<start>-<stop>``; a slab whose
    data was only partly written (a crash mid-write) has none and is computed again on
    resume. Each slab has its own file, so parallel writers (dask workers) never contend.
    """

    DIR = ".xrayseg-done"

    def __init__(self, out: str | os.PathLike, stage: str | None = None) -> None:
        self.dir = Path(out) / self.DIR
        if stage:
            self.dir = self.dir / stage

    def done(self) -> set[tuple[int, int]]:
        """Slab ranges whose marker exists."""
        if not self.dir.is_dir():
            return set()
        out = set()
        for f in self.dir.iterdir():
            a, _, b = f.name.partition("-")
            if a.isdigit() and b.isdigit():
                out.add((int(a), int(b)))
        return out

    def any_done(self) -> bool:
        """Whether any slab of any stage (an orthoplane run's passes) has its marker."""
        return self.dir.is_dir() and any(f.is_file() for f in self.dir.rglob("*-*"))

    def mark(self, r: tuple[int, int]) -> None:
        """Record slab ``r`` as written (call after its data is stored)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{r[0]}-{r[1]}").touch()


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x))


@dataclass(frozen=True)
class StoreLayout:
    """Where a run writes (picklable: dask workers reopen the stores from it)."""

    labels: str  # the store being written (the output, or its replacement beside it)
    labels_array: str  # "" for a plain array, "0" for a pyramid group
    confidence: str | None
    passes: int
    final: str  # where the labels end up (named in messages)
    replacing: bool
    confidence_final: str | None = None
    run: str = ""  # the run writing it (the labels store's RUN file holds it while it does)

    def owned(self) -> bool:
        """Whether this run still writes the stores: the labels store's :data:`RUN` file names it.

        dask cannot stop a slab already running: a cancelled cluster run's slabs finished after it
        returned and wrote into the output by path, into the next run's finished output (QA s44:
        47 % of its voxels, still "complete"). Each run writes its id when it opens the stores
        and :meth:`StoreWriter.finish` removes it.
        """
        if not self.run:
            return True
        for store in (self.labels, self.confidence):  # the confidence map too (review: a late slab wrote into one)
            if store is None:
                continue
            try:
                if (Path(store) / RUN).read_text(encoding="utf-8").strip() != self.run:
                    return False
            except FileNotFoundError:
                if not Path(store).is_dir():  # a worker that does not see the output's folder (review): say so
                    raise FileNotFoundError(errno.ENOENT, "no such output folder here", store) from None
                return False  # finished (its run file removed), or not this run's
        return True

    def pass_store(self, i: int) -> str:
        """Store of the class probabilities of early pass ``i``."""
        return str(Path(self.labels) / PASSES / f"p{i}")

    def markers(self, i: int) -> SlabMarkers:
        """Done-markers of pass ``i`` (the last pass's are the output's own)."""
        return SlabMarkers(self.labels, None if i == self.passes - 1 else f"pass{i}")


def _own(layout: StoreLayout) -> None:
    """Write the layout's run id into its stores (:meth:`StoreLayout.owned`)."""
    for store in (layout.labels, layout.confidence):
        if store is not None:
            (Path(store) / RUN).write_text(layout.run, encoding="utf-8")


class StoreWriter:
    """Writes slabs into the stores of a :class:`StoreLayout`; the same object on a dask worker."""

    def __init__(self, layout: StoreLayout, claims: tuple[Claim, ...] = ()) -> None:
        self.layout = layout
        self._claims = claims  # only the process that claimed the outputs commits them
        self._arrays: dict[Any, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"layout": self.layout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["layout"])

    def _array(self, key: Any) -> Any:
        import zarr

        if key not in self._arrays:
            lay = self.layout
            if key == "labels":
                self._arrays[key] = zarr.open_array(store=lay.labels, path=lay.labels_array, mode="r+")
            elif key == "confidence":
                self._arrays[key] = zarr.open_array(store=lay.confidence, mode="r+")
            else:
                self._arrays[key] = zarr.open_array(store=lay.pass_store(key), mode="r+")
        return self._arrays[key]

    def todo(self, i: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The slabs of pass ``i`` without a done-marker (none of a finished output, which keeps no markers)."""
        if output_complete(self.layout.labels):
            return []
        done = self.layout.markers(i).done()
        return [r for r in ranges if r not in done]

    def previous(self, i: int, region: tuple[slice, ...]) -> np.ndarray:
        """The sum of the probabilities the passes before ``i`` stored for ``region``."""
        reg = (slice(None), *region)
        total = np.asarray(self._array(0)[reg], dtype=np.float32)
        for j in range(1, i):
            total += np.asarray(self._array(j)[reg], dtype=np.float32)
        return total

    def _store(self, i: int, region: tuple[slice, ...], result: dict[str, np.ndarray]) -> None:
        if "probs" in result:
            self._array(i)[(slice(None), *region)] = result["probs"].astype(np.float16)
        if "labels" in result:
            self._array("labels")[region] = result["labels"]
        if "confidence" in result:
            self._array("confidence")[region] = result["confidence"]

    def write(self, i: int, r: tuple[int, int], region: tuple[slice, ...], result: dict[str, np.ndarray]) -> None:
        """Store slab ``r`` of pass ``i``, then its done-marker.

        Raises
        ------
        OutputWriteError
            On a full disk or unwritable location (finished slabs are kept), or where another run
            writes the stores now (a cancelled cluster run's slab finishing after it returned).
        """
        try:
            self._check_owned(r)
            self._store(i, region, result)
            self._check_owned(r, stored=True)  # taken over meanwhile: no marker of this run's
            self.layout.markers(i).mark(r)
        except OutputWriteError:
            raise
        except OSError as e:
            if e.errno == errno.ENOMEM:  # not the output's fault: an out-of-memory error for the caller
                raise
            raise self.write_error(e) from e

    def _check_owned(self, r: tuple[int, int], stored: bool = False) -> None:
        """Raise unless this run still writes the stores (a cancelled cluster run's slab finishing late)."""
        if not self.layout.owned():
            did = "stored but not marked done" if stored else "not stored"
            raise OutputWriteError(
                f"slices {r[0]}..{r[1] - 1} {did} in {self.layout.final}: another run writes it now, or it is "
                "finished (this run was cancelled or replaced)"
            )

    def write_error(self, e: OSError) -> OutputWriteError:
        """A one-line error for an OSError while streaming, saying what is kept and how to continue."""
        err = write_error(e, self.layout.final)
        if self.layout.replacing:
            how = (
                f"the previous output is untouched; finished slabs are kept beside it in {self.layout.labels}: "
                "--overwrite --resume continues from them"
            )
        else:
            how = "finished slabs are kept: --resume / resume=True continues from them"
        err.args = (f"{err.args[0]} ({how})",)
        return err

    def finish(self, cancel: CancelToken | None = None) -> Path:
        """Build the pyramid, drop the pass stores and markers, mark the outputs complete and swap them in place."""
        import zarr

        lay = self.layout
        try:
            node = zarr.open(store=lay.labels, mode="r+")
            meta = dict(node.attrs[OUTPUT_ATTR])
            if not meta.get("complete"):
                if meta.get("pyramid"):
                    write_pyramid(node, cancel=cancel, meta=meta)
                remove_path(Path(lay.labels) / PASSES)
                if lay.confidence is not None:
                    conf = self._array("confidence")
                    conf.attrs[OUTPUT_ATTR] = {**conf.attrs[OUTPUT_ATTR], "complete": True}
                node.attrs[OUTPUT_ATTR] = {**meta, "complete": True}
            # the attribute says it all now; the markers inside a pyramid group made zarr warn
            # ("not recognized as a component of a Zarr hierarchy") whenever the group was listed
            remove_path(Path(lay.labels) / SlabMarkers.DIR)
            for store in (lay.labels, lay.confidence):  # finished: no run writes them any more
                if store is not None:
                    remove_path(Path(store) / RUN)
        except OSError as e:
            raise self.write_error(e) from e
        for c in self._claims:
            c.commit()
        return Path(lay.final)

    def release(self) -> None:
        """Let go of the outputs' locks (a failed or cancelled run; :meth:`finish` commits and releases)."""
        for c in self._claims:
            c.release()

    @classmethod
    def open(
        cls,
        labels: Claim,
        confidence: Claim | None,
        *,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        classes: int,
        depth: int,
        passes: int,
        meta: dict[str, Any],
        axes: Sequence[int] = (),
    ) -> StoreWriter:
        """Create the stores of a new run, or check and reopen those of a run being resumed.

        Raises
        ------
        InputError
            If ``resume`` finds an output of another model or other settings, or not ours.
        OutputExistsError, OutputWriteError
            As :meth:`~napari_xrayseg.core.output.Claim.take`; another run writing the outputs.
        """
        import zarr

        with released_on_error(labels, confidence):  # refused or failed: a retry here may take the outputs
            for c in (labels, confidence):  # before anything of them is read or removed: a second run is refused
                if c is not None:
                    c.lock()
            pyramid = bool(meta["pyramid"])
            layout = StoreLayout(  # absolute: dask workers started in another folder write where the client reads
                labels=os.path.abspath(labels.path),
                labels_array="0" if pyramid else "",
                confidence=os.path.abspath(confidence.path) if confidence is not None else None,
                passes=passes,
                final=str(labels.final),
                replacing=labels.replacing,
                confidence_final=str(confidence.final) if confidence is not None else None,
                run=uuid.uuid4().hex[:12],
            )
            if labels.resume and (Path(labels.path) / CREATING).exists():  # cut off in the block below
                log.warning("%s was cut off while its stores were being created: starting it afresh", labels.final)
                for c in (labels, confidence):
                    if c is not None and c.resume:
                        remove_path(c.path)
                labels = dataclasses.replace(labels, resume=False)
                confidence = dataclasses.replace(confidence, resume=False) if confidence is not None else None
            if confidence is not None and confidence.resume != labels.resume:
                raise InputError(
                    f"cannot resume {labels.final}: its confidence output {confidence.final} is "
                    f"{'missing' if labels.resume else 'there but the labels are not'}; start again with "
                    "--overwrite"
                )
            if labels.resume:
                _check_resumable(labels.path, meta)
                if confidence is not None and (read_output_meta(confidence.path) or {}).get("labels") is None:
                    raise InputError(
                        f"cannot resume {confidence.final}: it is not a confidence output of xrayseg "
                        "predict; choose another --confidence-out"
                    )
                _update_on_resume(layout, meta)
                if not output_complete(labels.path):  # a finished one takes nothing (review: a read-only one failed)
                    _own(layout)  # this run writes it now: a slab of the run before it is not stored
                n = len(layout.markers(passes - 1).done())
                log.info("resuming %s: %d slabs of the last pass already done", labels.final, n)
                return cls(layout, tuple(c for c in (labels, confidence) if c is not None))
            attrs = _jsonable({OUTPUT_ATTR: meta})
            try:
                creating = labels.take() / CREATING  # until the labels' attributes are written: resume starts afresh
                creating.parent.mkdir(exist_ok=True)  # an empty folder given as the output, removed above
                creating.touch()
                for i in range(passes - 1):
                    zarr.create_array(
                        store=layout.pass_store(i),
                        shape=(classes, *shape),
                        dtype="float16",
                        fill_value=0,
                        chunks=(classes, *pass_chunks(shape, depth, axes[i] if axes else None)),
                        compressors=None,
                    )
                if confidence is not None:
                    confidence.take()
                    c = zarr.create_array(
                        store=layout.confidence,
                        shape=shape,
                        chunks=chunks,
                        dtype="float32",
                        fill_value=0,
                        dimension_names=_axes(len(shape)),
                    )
                    c.attrs.update(
                        _jsonable(
                            {
                                OUTPUT_ATTR: {
                                    "confidence": meta["confidence"],
                                    "labels": layout.final,
                                    "tta": meta["tta"],
                                    "voxel_size": meta.get("voxel_size"),
                                    "unit": meta.get("unit"),
                                    "origin": meta.get("origin"),
                                    "complete": False,
                                }
                            }
                        )
                    )
                if pyramid:  # the attributes last: an output that has them has all its stores
                    group = zarr.create_group(store=layout.labels)
                    group.create_array(
                        "0", shape=shape, chunks=chunks, dtype="uint8", fill_value=0, dimension_names=_axes(len(shape))
                    )
                    # level 0 alone until the pyramid is built
                    group.attrs.update({**attrs, "ome": _ome_attrs(meta, 1, len(shape))})
                else:
                    zarr.create_array(
                        store=layout.labels,
                        shape=shape,
                        chunks=chunks,
                        dtype="uint8",
                        fill_value=0,
                        attributes=attrs,
                        dimension_names=_axes(len(shape)),
                    )
                _own(layout)
                creating.unlink()
            except OSError as e:
                if isinstance(e, (FileExistsError, OutputWriteError)):
                    raise
                raise write_error(e, labels.final) from e
            return cls(layout, tuple(c for c in (labels, confidence) if c is not None))

    def result(self, image: Any) -> tuple[Any, Any]:
        """The finished labels (and confidence) as the same kind of array as ``image``."""
        import zarr

        lab = output_levels(self.layout.final)[0]
        conf = None
        if self.layout.confidence_final is not None:
            conf = zarr.open_array(store=self.layout.confidence_final, mode="r")
        return _like(image, lab, True), (_like(image, conf, True) if conf is not None else None)


def input_digest(image: Any) -> str:
    """A fingerprint of an image for ``--resume``: SHA-256 of three central patches, as float32.

    The central 64 x 64 patch of the first, middle and last slices along axis 0 (channels
    and 2D images alike). A few chunks are read, not the volume. Two images of one shape are told apart unless
    those patches are equal: an output is then not resumed from another image's slabs.
    """
    import hashlib

    from .io import read_block

    shape = tuple(int(n) for n in image.shape)
    centre = tuple(slice(max(0, n // 2 - 32), n // 2 + 32) for n in shape[-2:])
    h = hashlib.sha256(repr(shape).encode())
    if len(shape) == 2:
        picks = [centre]
    else:
        lead = (slice(None),) * (len(shape) - 3)  # channels
        picks = [(*lead, z, *centre) for z in sorted({0, shape[-3] // 2, shape[-3] - 1})]
    for index in picks:
        h.update(np.ascontiguousarray(read_block(image, index), dtype=np.float32).tobytes())
    return h.hexdigest()


def _check_resumable(path: Path, meta: dict[str, Any]) -> None:
    old = read_output_meta(path)
    if old is None:
        raise InputError(f"cannot resume {path}: it is not an output of xrayseg predict; choose another --out")
    old.setdefault("axes", [old.get("axis")])  # written before several axes could resume
    diff = [k for k, default in RESUME_KEYS.items() if _jsonable(old.get(k, default)) != _jsonable(meta[k])]
    if not diff and old.get("input_digest") not in (None, meta.get("input_digest")):  # older outputs: no digest
        raise InputError(
            f"cannot resume {path}: it was written from another image (the same shape, other grey levels); "
            "give the image it was started from, or pass overwrite=True (--overwrite) to start again"
        )
    if not diff and old.get("input_digest") is None:  # QA: another scan of the same shape was finished into it
        log.warning(
            "%s was started by an older napari-xrayseg, which did not record its image: it cannot be checked that "
            "this is the same scan; if it is not, the output mixes two scans (pass overwrite=True / --overwrite "
            "to start again)",
            path,
        )
    if diff:
        names = {
            "model_sha256": "model weights",
            "slab": "slab depth",
            "normalization": "normalisation",
            "tta": "test-time views (tta)",
        }
        slab = (
            f" (the slab depth follows the image's chunks unless given: pass --slab {old['slab']})"
            if "slab" in diff and old.get("slab")
            else ""
        )
        if "nodata" in diff:  # the model's value now applies by default (review s45: said without the values)
            slab += (
                f" (nodata {old.get('nodata')} then, {meta.get('nodata')} now: pass --nodata "
                f"{'none' if old.get('nodata') is None else old.get('nodata')} to continue as it was written)"
            )
        raise InputError(
            f"cannot resume {path}: it was written with a different "
            f"{', '.join(names.get(k, k) for k in diff)}{slab}; "
            "use the same model and settings, or pass overwrite=True (--overwrite) to start again"
        )


def _update_on_resume(layout: StoreLayout, meta: dict[str, Any]) -> None:
    """On resume, record this run's voxel size and origin (they change no voxel: no reason to refuse) and the run.

    A finished output resumed with the same voxel size and origin is left untouched.

    The first run's ``provenance`` stays; each resuming run adds ``{"created", "command", "cwd",
    "software"}`` to its ``resumed`` list.
    """
    import zarr

    new: dict[str, Any] = {"voxel_size": meta.get("voxel_size"), "unit": meta.get("unit"), "origin": meta.get("origin")}
    node = zarr.open(store=layout.labels, mode="r")
    old = dict(node.attrs[OUTPUT_ATTR])
    same = _jsonable({k: old.get(k) for k in new}) == _jsonable(new)
    if same and old.get("complete"):  # nothing to finish, nothing to record: left as it is (QA: a no-op --resume
        return  # rewrote the attributes, logged a "resumed" run, and failed in a read-only folder)
    node = zarr.open(store=layout.labels, mode="r+")
    if not same:
        log.info(
            "resuming with voxel size %s %s (was %s %s)",
            new["voxel_size"],
            new["unit"],
            old.get("voxel_size"),
            old.get("unit"),
        )
    run = meta.get("provenance")
    if isinstance(run, dict):
        first = old.get("provenance") if isinstance(old.get("provenance"), dict) else None
        was = dict(first) if first is not None else {"created": None, "note": "written before provenance was recorded"}
        this = {k: run.get(k) for k in ("created", "command", "cwd", "software")}
        new["provenance"] = {**was, "resumed": [*(was.get("resumed") or []), this]}
    node.attrs[OUTPUT_ATTR] = _jsonable({**old, **new})
    if layout.labels_array:  # a pyramid group: the levels it has (finish() writes them again if it adds some)
        levels = multiscale_levels(node) or [node[layout.labels_array]]
        node.attrs["ome"] = _ome_attrs({**old, **new}, len(levels), len(levels[0].shape))
    if layout.confidence is not None:
        conf = zarr.open_array(store=layout.confidence, mode="r+")
        conf.attrs[OUTPUT_ATTR] = _jsonable({**conf.attrs[OUTPUT_ATTR], **new})


def slabs_done(path: str | os.PathLike) -> int | None:
    """Slabs an unfinished predict run into ``path`` has done; None where it is no such run."""
    old = read_output_meta(Path(path))
    if old is None or old.get("complete"):
        return None
    return len(SlabMarkers(Path(path)).done())


def resume_hint(path: Path) -> str:
    """Added to "output exists" when the output is an unfinished run."""
    n = slabs_done(path)
    if n is None:
        return ""
    return f" (an unfinished run: {n} slab{'s' if n != 1 else ''} done; pass resume=True / --resume to finish it)"


def _zarr_behind(arr: Any) -> Any:
    """The zarr array a dask array reads (``da.from_zarr``: the napari reader's layers), else ``arr``.

    QA: the Evaluate and Analyze widgets scored a cancelled Segment output opened in napari (mean Dice 0.37 with
    one slab of three done): the layer's dask array names no store.
    """
    graph = getattr(arr, "__dask_graph__", None)
    if graph is None:
        return arr
    import zarr

    found = [v for v in dict(graph()).values() if isinstance(v, zarr.Array)]
    return found[0] if len(found) == 1 else arr


def refuse_unfinished(arr: Any, what: str) -> None:
    """Refuse to measure an unfinished output of ``segment`` (its missing slabs read as 0).

    ``arr`` is a path or an array opened from one (a plain output, or a level of a pyramid
    group); arrays in memory, and stores that are not outputs, pass.

    Raises
    ------
    InputError
        Naming the store, the slabs done and ``--resume``.
    """
    from .output import source_path

    p = source_path(_zarr_behind(arr))
    if p is None or not p.exists():
        return
    for q in (p, p.parent) if p.name.isdigit() else (p,):  # a pyramid level: the group holds the record
        meta = read_output_meta(q)
        if meta is not None and "classes" in meta:
            if meta.get("complete") is False:
                n = len(SlabMarkers(q).done())
                raise InputError(
                    f"{what} {q} is an unfinished predict run ({n} slab{'s' if n != 1 else ''} done; the rest would be "
                    "scored as 0): "
                    "finish it with the same predict command and --resume (resume=True), then measure it"
                )
            return


class MemoryWriter:
    """Keeps the result in memory (no ``out``): numpy arrays, a running sum of early passes."""

    def __init__(self, shape: tuple[int, ...], *, classes: int, passes: int, confidence: bool) -> None:
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.confidence = np.zeros(shape, dtype=np.float32) if confidence else None
        self.acc = np.zeros((classes, *shape), dtype=np.float32) if passes > 1 else None

    def todo(self, i: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Every slab: nothing is kept between runs."""
        return list(ranges)

    def previous(self, i: int, region: tuple[slice, ...]) -> np.ndarray:
        """The running sum of the earlier passes' probabilities in ``region``."""
        return self.acc[(slice(None), *region)]  # type: ignore[index]

    def write(self, i: int, r: tuple[int, int], region: tuple[slice, ...], result: dict[str, np.ndarray]) -> None:
        """Store slab ``r`` of pass ``i``."""
        if "probs" in result:  # rounded as a store keeps them: a run with an output gives the same labels
            self.acc[(slice(None), *region)] += result["probs"].astype(np.float16)  # type: ignore[index]
        if "labels" in result:
            self.labels[region] = result["labels"]
        if "confidence" in result:
            self.confidence[region] = result["confidence"]  # type: ignore[index]

    def finish(self, cancel: CancelToken | None = None) -> None:
        """Nothing to finish in memory."""

    def result(self, image: Any) -> tuple[Any, Any]:
        """The labels (and confidence) as the same kind of array as ``image``."""
        conf = _like(image, self.confidence, False) if self.confidence is not None else None
        return _like(image, self.labels, False), conf


def _like(image: Any, target: Any, on_disk: bool) -> Any:
    """Numpy for numpy input, dask for dask input, the zarr array written for zarr input (numpy in memory).

    A memory-mapped file (``.npy``, an uncompressed TIFF) is a file, not an array in memory:
    with an output store it gets the zarr array written, so memory does not grow with the volume.
    """
    from .channels import ChannelStack
    from .level import LevelledView

    chunks = getattr(image, "chunks", None)  # the view's own (a channel stack's are spatial)
    while isinstance(image, (MissingView, ChannelStack, LevelledView)):  # read through a view: its source's kind
        image = image.source
    if isinstance(image, np.memmap) and on_disk:
        return target
    if isinstance(image, np.ndarray):
        return np.asarray(target[...]) if on_disk else target
    # an input is a dask array only if dask.array is imported: never import it (0.4 s) just to ask
    da = sys.modules.get("dask.array")
    if da is not None and isinstance(image, da.Array):
        if on_disk:
            return da.from_zarr(target)
        return da.from_array(target, chunks=chunks if chunks is not None and len(chunks) == target.ndim else "auto")
    return target


def trained_on_of(arr: Any) -> dict[str, Any] | None:
    """``{"axis", "slices"}`` of the image the model trained on, as an output of ``xrayseg predict`` records it.

    :func:`~napari_xrayseg.core.inference.trained_on` wrote it when the model's training image
    was the image segmented; None for any other array or output.
    """
    from .output import source_path

    if isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap):
        return None
    p = source_path(arr)
    if p is None or not p.exists():
        return None
    for q in (p, p.parent) if p.name.isdigit() else (p,):
        meta = read_output_meta(q) if (q.is_dir() or q.suffix.lower() == ".zarr") else None
        found = (meta or {}).get("trained_on")
        if isinstance(found, dict) and isinstance(found.get("slices"), list) and isinstance(found.get("axis"), int):
            return {"axis": int(found["axis"]), "slices": [int(k) for k in found["slices"]]}
    return None
