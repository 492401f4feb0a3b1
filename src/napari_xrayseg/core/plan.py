"""The plan stage of segmentation: which axes, which slabs (with their context halo), which tiles.

A :class:`SegmentPlan` is everything about one pass over the volume but the image and
the weights: shape, slicing axis, slab depth, context, tile geometry and intensity
normalisation. It reads a slab (plus halo) and cuts it into normalised network inputs;
it never runs a network. Picklable, so dask workers run slabs of the same plan.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, XraysegError, not_intensities
from .io import read_block, volume_chunks
from .normalize import apply_normalization, compute_normalization, dead_slices_missing, fill_missing
from .tiling import (
    AUTO,
    check_tile_fits,
    context_range,
    effective_tile,
    normalize_axis,
    plan_slab_depth,
    slab_ranges,
    slab_slicer,
    stack_context,
)

__all__ = [
    "SegmentPlan",
    "check_image",
    "check_window_options",
    "parse_axes",
    "plan_passes",
    "plan_segment",
    "prefetched",
    "resolved_normalization",
]

log = logging.getLogger(__name__)
_LETTERS = {"z": 0, "y": 1, "x": 2}


def small_slices_message(
    shape: tuple[int, ...], axes: Sequence[int], stride: int, training: bool, which: str = ""
) -> str:
    """Why slices of ``shape`` along ``axes`` are too small for a network of ``stride``, with the fixes that apply.

    QA s45: "choose another axis" was offered for 2D images, with axes="zyx" and where every other
    axis was smaller still, and the fixes that work (a smaller network, padding) went unsaid.
    """
    planes = {a: tuple(v for i, v in enumerate(shape) if i != a) if len(shape) == 3 else tuple(shape) for a in axes}
    a = min(planes, key=lambda k: min(planes[k]))
    plane = planes[a]
    fixes = [f"pad the image to {stride} pixels or more along both sides of a slice"]
    fits = min(plane)  # a size whose minimum the slice still misses helps nothing (review s45)
    sizes = ", ".join(f"{name!r}: minimum {m}" for name, m in (("small", 8), ("tiny", 4)) if m < stride and m <= fits)
    if sizes:
        fixes.append(
            f"train a smaller network (size={sizes}; --size)"
            if training
            else f"segment with a model of a smaller network (trained with size={sizes})"
        )
    colour = shape[-1] in (3, 4)
    if colour:
        fixes.insert(0, "convert a colour image (last axis of 3 or 4 channels) to grayscale")
    elif len(shape) == 3 and len(axes) == 1:
        better = [k for k in range(3) if min(v for i, v in enumerate(shape) if i != k) >= stride]
        if better:
            fixes.append(f"slice along axis {better[0]} (axis={better[0]})")
    return (
        f"slices along axis {a} are {'x'.join(map(str, plane))} pixels, smaller than the network's minimum "
        f"{stride}{f' ({which})' if which else ''}: " + "; or ".join(fixes)
    )


def check_image(image: Any, *, name: str = "image") -> Any:
    """Check that ``image`` is a 2D or 3D numeric array-like; return it (lists become numpy).

    Raises
    ------
    InputError
        On a wrong number of dimensions or a boolean / non-numeric dtype.
    """
    from .io import as_input

    image = as_input(image, name)
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    ndim = len(image.shape)
    if ndim not in (2, 3):
        raise InputError(
            f"{name} has {ndim} dimensions (shape {tuple(image.shape)}): give a 2D slice or a "
            "3D volume (for multi-channel data pick one channel, or train a multi-channel model: --channel-axis, "
            "channel_axis=)"
        )
    dt = np.dtype(image.dtype)
    if dt == np.bool_ or not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
        raise not_intensities(name, dt)
    if min(image.shape) < 1:
        raise InputError(f"{name} is empty (shape {tuple(image.shape)})")
    return image


def parse_axes(axes: str | int | Sequence[int] | None, ndim: int, default: int = 0) -> list[int]:
    """Slicing axes from ``"zyx"``, ``"z"``, ``"012"``, ``(0, 1, 2)``, an int or None (``default``).

    Examples
    --------
    >>> parse_axes("zyx", 3), parse_axes((2, 0), 3), parse_axes(None, 3, default=1)
    ([0, 1, 2], [2, 0], [1])
    """
    if axes is None:
        return [default]
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        return [normalize_axis(int(axes), ndim)]
    if isinstance(axes, str):
        try:
            items = [_LETTERS[c] if c in _LETTERS else int(c) for c in axes.strip().lower()]
        except ValueError:
            items = []
        if not items:
            raise InputError(
                f"axes {axes!r} not understood: use letters of 'zyx' (e.g. 'zyx' for all three) "
                "or axis numbers like '012'"
            )
    else:
        items = list(axes)
    if ndim == 2 and items not in ([0], [-1], [-2]):
        raise InputError("a 2D image has one slicing direction: leave axes unset for 2D input")
    out = [normalize_axis(a, ndim) for a in items]
    if len(set(out)) != len(out):
        raise InputError(f"axes {axes!r} repeats an axis: give each axis once, e.g. 'zyx'")
    return out


def resolved_normalization(norm: dict[str, Any], image: Any) -> dict[str, Any]:
    """The model's normalisation with ``low``/``high`` computed from ``image`` where the model leaves them open."""
    norm = dict(norm)
    if norm.get("low") is None or norm.get("high") is None:
        pct = tuple(norm.get("percentiles") or (0.5, 99.5))
        norm = compute_normalization(image, percentiles=pct)
        log.info("normalisation computed from the image: low=%.4g high=%.4g", norm["low"], norm["high"])
    else:
        _warn_other_grey_range(norm, image)
    return norm


def channel_grey_ranges(image: Any, percentiles: Sequence[float] | None = None) -> list[list[float]]:
    """Each channel's grey range ``[low, high]`` (percentile bounds) of a channel stack.

    ``image`` is a :class:`~napari_xrayseg.core.channels.ChannelStack`. Training records the
    ranges (``training_channel_bounds``) so that segmenting can tell a swapped channel order
    (:func:`_warn_channel_order`).
    """
    pct = tuple(percentiles or (0.5, 99.5))
    bounds = [compute_normalization(v, percentiles=pct) for v in image.views]
    return [[float(b["low"]), float(b["high"])] for b in bounds]


#: A channel order is called swapped when another order matches the training's grey ranges better by this
#: much (summed over channels; a channel's 10x gain alone costs 2.3, a range moved by its own width 1).
CHANNEL_ORDER_MARGIN = 3.0


def _range_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """How unlike two grey ranges are: log ratio of their widths plus the shift of their centres in the wider width."""
    wa, wb = max(a[1] - a[0], 1e-12), max(b[1] - b[0], 1e-12)
    return abs(math.log(wa / wb)) + abs((a[0] + a[1]) - (b[0] + b[1])) / 2 / max(wa, wb)


def _warn_channel_order(trained: Any, bounds: list[dict[str, Any]]) -> None:
    """Warn when an image's channels match the training's grey ranges far better in another order.

    Each channel is normalised by its own bounds, so a phase + absorption pair given in the other
    order segments without a word into nonsense (QA: mean Dice 0.80 -> 0.28). Channels of like
    ranges (two energies of one detector) cannot be told apart this way and are not warned about.
    """
    if not trained or len(trained) != len(bounds):
        return
    from scipy.optimize import linear_sum_assignment

    got = [(float(b["low"]), float(b["high"])) for b in bounds]
    cost = np.array([[_range_distance(t, g) for g in got] for t in trained])
    rows, cols = linear_sum_assignment(cost)
    same, best = float(np.trace(cost)), float(cost[rows, cols].sum())
    if same - best > CHANNEL_ORDER_MARGIN and best < same / 2:
        order = [int(c) for c in cols]
        log.warning(
            "the channels look swapped: the model's channels 0..%d look like this image's channels %s (its "
            "grey ranges %s; the training's %s). Channels in another order segment into nonsense: if they are "
            "swapped, reorder them, e.g. np.take(image, %s, axis=channel_axis)",
            len(order) - 1,
            order,
            ", ".join(f"{lo:.4g}..{hi:.4g}" for lo, hi in got),
            ", ".join(f"{float(lo):.4g}..{float(hi):.4g}" for lo, hi in trained),
            order,
        )


#: :func:`resolved_normalization` warns when an image's grey range shares less than this with a model's
#: fixed bounds, or is more than this many times wider or narrower.
FIXED_OVERLAP, FIXED_RATIO = 0.5, 3.0


def _warn_other_grey_range(norm: dict[str, Any], image: Any) -> None:
    """Warn when a fixed-bounds model (``normalize="fixed"``) meets an image on another grey scale.

    Its bounds are applied as they are: a scan in another range (uint16 against float) came out one
    class everywhere, without a word (QA).
    """
    lo, hi = float(norm["low"]), float(norm["high"])
    try:
        own = compute_normalization(image, percentiles=tuple(norm.get("percentiles") or (0.5, 99.5)))
    except (XraysegError, TypeError, ValueError):  # no sample to compare (the run names what is wrong)
        return
    a, b = float(own["low"]), float(own["high"])
    if not (b > a and hi > lo):
        return
    shared = max(0.0, min(hi, b) - max(lo, a)) / (b - a)
    ratio = (b - a) / (hi - lo)
    if shared < FIXED_OVERLAP or not 1 / FIXED_RATIO < ratio < FIXED_RATIO:
        log.warning(
            "the model maps grey levels %.4g..%.4g (fixed bounds, normalize='fixed'), but this image's lie at "
            "%.4g..%.4g: it may come out as one class. Fine-tune or train on this scan with normalize='image' "
            "(--normalize image), or bring the image to the model's grey scale",
            lo,
            hi,
            a,
            b,
        )


@dataclass(frozen=True)
class SegmentPlan:
    """One pass over a volume: slabs along an axis, tiles, context and normalisation."""

    shape: tuple[int, ...]
    axis: int
    context: int
    depth: int
    tile: int | str  # "auto" or a sliding-window side
    overlap: float
    batch: int
    blend: str
    normalization: dict[str, Any]
    precision: str = "fp32"  # resolved: fp32, bf16 or fp16
    independent: bool = False  # slices are unrelated 2D images (a two_d model): no halo, own context
    channels: int = 1  # image channels (the image is then a ChannelStack: reads come channel first)

    @property
    def is2d(self) -> bool:
        """Whether the image is a single 2D slice."""
        return len(self.shape) == 2

    @property
    def shape3(self) -> tuple[int, ...]:
        """The shape as 3D (a 2D image is one slice)."""
        return (1, *self.shape) if self.is2d else tuple(self.shape)

    @property
    def n(self) -> int:
        """Slices along the slicing axis."""
        return self.shape3[self.axis]

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """Half-open slab ranges along the slicing axis."""
        return slab_ranges(self.n, self.depth)

    @property
    def slice_shape(self) -> tuple[int, int]:
        """Shape of one 2D slice."""
        return tuple(s for d, s in enumerate(self.shape3) if d != self.axis)  # type: ignore[return-value]

    @property
    def out_chunks(self) -> tuple[int, ...]:
        """Output chunks: one slab deep along the axis, so no two slabs share a chunk."""
        c = tuple(self.depth if d == self.axis else min(s, 512) for d, s in enumerate(self.shape3))
        return c[1:] if self.is2d else c

    def region(self, r: tuple[int, int]) -> tuple[slice, ...]:
        """Index of slab ``r`` in the volume (all of a 2D image)."""
        return (slice(None),) * 2 if self.is2d else slab_slicer(self.axis, r[0], r[1], 3)

    def read(self, image: Any, r: tuple[int, int]) -> np.ndarray:
        """Slices ``r`` plus the context halo (clipped at the volume ends), slicing axis first.

        Channel first, then slicing axis, for a multi-channel image.
        """
        lo, hi = r if self.independent else context_range(r[0], r[1], self.context, self.n)
        lead = int(self.channels > 1)
        if self.is2d:
            data = read_block(image, (Ellipsis,), what="image")
            return data[:, None] if lead else data[None]
        data = read_block(
            image, slab_slicer(self.axis, lo, hi, 3), what=f"image (slices {lo}..{hi - 1} along axis {self.axis})"
        )
        data = np.moveaxis(data, lead + self.axis, lead)
        return data if lead or self.independent else dead_slices_missing(data, self.axis, lo)

    def inputs(
        self, data: np.ndarray, r: tuple[int, int], per_call: int
    ) -> Generator[tuple[int, int, np.ndarray], None, None]:
        """Normalised network inputs of slab ``r`` from its :meth:`read` data: ``(start, stop, input)``.

        ``per_call`` slices at a time; with context k > 1 each input is (N, k, Y, X), stacked
        per call (memory k x a call, not k x the slab). With C channels, (N, C x k, Y, X):
        each channel normalised by its own bounds, its k context slices together.

        Voxels without data (NaN) are filled from the nearest voxel with data in their
        slice (:func:`~napari_xrayseg.core.normalize.fill_missing`); :meth:`missing` says
        which they are, so that their labels are 0.

        Raises
        ------
        InputError
            If the slab holds inf.
        """
        if self.channels == 1:
            yield from self._inputs(data, r, per_call, self.normalization)
            return
        bounds = self.normalization.get("channel_bounds") or [self.normalization] * self.channels
        parts = [self._inputs(data[c], r, per_call, bounds[c]) for c in range(self.channels)]
        for got in zip(*parts):
            s, e = got[0][:2]
            yield s, e, np.concatenate([x[:, None] if x.ndim == 3 else x for _, _, x in got], axis=1)

    def _inputs(
        self, data: np.ndarray, r: tuple[int, int], per_call: int, normalization: dict[str, Any]
    ) -> Generator[tuple[int, int, np.ndarray], None, None]:
        k = self.context
        lo, hi = r if self.independent else context_range(r[0], r[1], k, self.n)
        try:
            if self.independent and normalization.get("low") is None:  # every image by its own bounds
                pct = tuple(normalization.get("percentiles") or (0.5, 99.5))
                bounds = [compute_normalization(d, percentiles=pct) if not _no_data(d) else None for d in data]
                x = np.stack(
                    [
                        apply_normalization(fill_missing(d)[0], b) if b else np.zeros(d.shape, np.float32)
                        for d, b in zip(data, bounds)
                    ]
                )
            else:  # voxels without data (NaN) take the nearest grey level with data in their slice
                x = apply_normalization(fill_missing(data, float(normalization["low"]))[0], normalization)
        except InputError as e:
            raise InputError(f"{e.args[0]} (slices {lo}..{hi - 1} along axis {self.axis})") from None
        if self.independent:  # each image is its own context
            for s in range(0, r[1] - r[0], per_call):
                e = min(s + per_call, r[1] - r[0])
                yield s, e, (x[s:e] if k == 1 else np.repeat(x[s:e, None], k, axis=1))
            return
        b = r[0] - lo  # the slab's first slice inside x
        n = r[1] - r[0]
        for s in range(0, n, per_call):
            e = min(s + per_call, n)
            if k == 1:
                yield s, e, x[b + s : b + e]
            else:
                yield s, e, stack_context(x[b + s : b + e], k, before=x[: b + s], after=x[b + e :])

    def missing(self, data: np.ndarray, r: tuple[int, int]) -> np.ndarray | None:
        """Voxels of slab ``r`` without data (NaN in any channel) in the volume's orientation, or None.

        ``data`` is the slab's :meth:`read` data (its context halo included).
        """
        if data.dtype.kind != "f":
            return None
        lo = r[0] if self.independent else context_range(r[0], r[1], self.context, self.n)[0]
        core = data[..., r[0] - lo : r[1] - lo, :, :] if not self.is2d else data
        miss = np.isnan(core)
        if self.channels > 1:
            miss = miss.any(axis=0)
        return self.orient(miss) if miss.any() else None

    def orient(self, slab: np.ndarray, lead: int = 0) -> np.ndarray:
        """A slab computed slicing-axis first (after ``lead`` leading axes) back in the volume's orientation."""
        if self.is2d:
            return slab[(slice(None),) * lead + (0,)]
        return np.moveaxis(slab, lead, lead + self.axis)


def _no_data(d: np.ndarray) -> bool:
    """True where an image holds no value at all (every pixel NaN)."""
    return d.dtype.kind == "f" and bool(np.isnan(d).all())


def check_window_options(overlap: Any, batch: Any, blend: Any) -> None:
    """Check the sliding-window options shared by plans and predictors.

    Raises
    ------
    InputError
        On an overlap outside [0, 1), a batch that is not a positive integer, an unknown blend.
    """
    if not isinstance(overlap, (int, float)) or isinstance(overlap, bool) or not 0 <= overlap < 1:
        raise InputError(f"overlap {overlap!r} must be in [0, 1), e.g. 0.25")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InputError(f"batch {batch!r} must be a positive integer")
    if blend not in ("gaussian", "constant"):
        raise InputError(f"blend {blend!r} must be 'gaussian' or 'constant'")


def plan_segment(
    image: Any,
    info: Any,
    *,
    axis: int = 0,
    tile: int | str | None = AUTO,
    overlap: float = 0.25,
    batch: int = 8,
    slab: int | None = None,
    blend: str = "gaussian",
    normalization: dict[str, Any] | None = None,
    precision: str = "fp32",
) -> SegmentPlan:
    """Check the inputs and decide slabs, tiles and normalisation of one pass along ``axis``.

    Parameters
    ----------
    image : array-like
        The volume (only shape, dtype and chunks are looked at, unless the
        normalisation must be computed from it).
    info : ModelInfo or Model
        The model's description (stride, recommended tile, context, normalisation).
    axis, tile, overlap, batch, slab, blend, precision
        As in :func:`~napari_xrayseg.segment`.
    normalization : dict, optional
        Resolved bounds to use (e.g. those of a run being resumed).

    Raises
    ------
    InputError
        On a bad axis, tile, overlap, batch, slab or blend.
    """
    info = getattr(info, "info", info)
    image = check_image(image)
    check_window_options(overlap, batch, blend)
    is2d = len(image.shape) == 2
    axis = 0 if is2d and axis in (0, -1, -2) else normalize_axis(axis, len(image.shape))
    shape3 = (1, *image.shape) if is2d else tuple(image.shape)
    slice_shape = tuple(s for d, s in enumerate(shape3) if d != axis)
    stride = info.stride
    if min(slice_shape) < stride:
        raise InputError(small_slices_message(shape3 if not is2d else tuple(image.shape), [axis], stride, False))
    if tile is None:
        tile = info.tile
    elif tile != AUTO:
        if isinstance(tile, str):
            raise InputError(f"tile {tile!r} must be 'auto' or a multiple of the network's stride {stride}")
        effective_tile(slice_shape, tile, stride)  # a positive multiple of the stride
        check_tile_fits(slice_shape, tile, stride)
    chunks = volume_chunks(image)
    chunks3 = (1, *chunks) if (is2d and chunks) else chunks
    # a 3D network computes its context slices once per slab: deeper slabs waste less (the
    # halo of 7 slices each side costs 1.44x at 32, 1.9x at 16; docs/performance.md)
    depth = plan_slab_depth(shape3, axis, chunks3, slab, default=32 if info.arch == "unet3d" else 16)
    two_d = bool(getattr(info, "two_d", False))
    channels = int(getattr(info, "channels", 1))
    if normalization is not None:
        norm = normalization
    elif two_d and info.normalization.get("low") is None:
        norm = dict(info.normalization)  # every image by its own bounds, slice by slice
    elif channels > 1:  # every channel by its own bounds
        norm = {
            **info.normalization,
            "channel_bounds": [resolved_normalization(info.normalization, v) for v in image.views],
        }
        _warn_channel_order(info.normalization.get("training_channel_bounds"), norm["channel_bounds"])
    else:
        norm = resolved_normalization(info.normalization, image)
    return SegmentPlan(
        shape=tuple(int(s) for s in image.shape),
        axis=axis,
        context=info.context,
        depth=depth,
        tile=tile if tile == AUTO else int(tile),
        overlap=float(overlap),
        batch=batch,
        blend=blend,
        normalization=norm,
        precision=precision,
        independent=two_d,
        channels=channels,
    )


#: Least chunk side of an early pass's probability store across its slicing axis. Along that axis a chunk is one
#: slab deep (slabs written in parallel never share a chunk); across it, cubes of the slab depth made a file of
#: 8 voxels per chunk at ``--slab 2`` (221,184 files a pass on 48 x 192 x 192: 478 s instead of 0.9 s at the
#: default slab 32, whose chunks stay cubes; 9.3 s now; QA). A later pass reads slabs of these chunks along its
#: own axis: up to ``PASS_CHUNK / depth`` times the bytes it needs (16 and 64 took 24.5 and 5.3 s there).
PASS_CHUNK = 32


def pass_chunks(shape: Sequence[int], depth: int, axis: int | None) -> tuple[int, ...]:
    """Chunks of an early pass's probability store (without its class axis): one slab deep along ``axis``.

    Examples
    --------
    >>> pass_chunks((48, 192, 192), 2, 1), pass_chunks((48, 192, 192), 32, 0)
    ((32, 2, 32), (32, 32, 32))
    """
    return tuple(min(int(n), depth if k == axis else max(depth, PASS_CHUNK)) for k, n in enumerate(shape))


def plan_passes(image: Any, info: Any, axes: list[int], *, slab: int | None, **kw: Any) -> list[SegmentPlan]:
    """One plan per axis.

    Several axes share one slab depth (32 by default): the early passes' probability stores
    are chunked one slab deep along their axis (:func:`pass_chunks`).
    """
    if len(axes) == 1:
        return [plan_segment(image, info, axis=axes[0], slab=slab, **kw)]
    if getattr(getattr(info, "info", info), "two_d", False):
        raise InputError("the model was trained on independent 2D images: segment along one axis (no orthoplanes)")
    depth = slab if slab is not None else 32
    plans = [plan_segment(image, info, axis=a, slab=depth, **kw) for a in axes]
    d = min(p.depth for p in plans)
    if any(p.depth != d for p in plans):  # a short axis clipped the depth: use it for every pass
        plans = [plan_segment(image, info, axis=a, slab=d, **kw) for a in axes]
        shape = [int(n) for n in image.shape[-3:]]
        short = min(axes, key=lambda a: shape[a])
        if d < 16 and shape[short] < 16:
            log.warning(
                "axis %d has %d slices, so every orthoplane pass reads slabs %d slices deep: the passes along the "
                "other axes take about %dx the steps of one pass (a 5x1024x1024 volume: over 100x slower), and "
                "their slices, %d pixels tall, show the network little; segment along axis %d alone (axes=%r)",
                short,
                shape[short],
                d,
                max(shape) // d,
                shape[short],
                short,
                "zyx"[short],
            )
    elif slab is not None and d < 8:  # the probability stores' chunks are d deep: many small files
        shape3 = [int(n) for n in image.shape[-3:]]
        log.warning(
            "slab %d with several axes: each pass's probability store is chunked %d deep along its axis, about %s "
            "files a pass, and the run is several times slower (slab 2 on 48x192x192: 15x the time of the default "
            "slab 32); use a slab of 16 or more, or a smaller --batch or --tile to save memory",
            d,
            d,
            f"{math.prod(-(-n // c) for n, c in zip(shape3, pass_chunks(shape3, d, axes[0]))):,}",
        )
    return plans


def prefetched(
    read: Callable[[tuple[int, int]], Any], ranges: Sequence[tuple[int, int]]
) -> Iterator[tuple[tuple[int, int], Any]]:
    """``(range, data)`` for each slab, reading the next slab in a thread while the caller computes."""
    if not ranges:
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xrayseg-read")
    try:
        nxt = pool.submit(read, ranges[0])
        for i, r in enumerate(ranges):
            data = nxt.result()
            if i + 1 < len(ranges):
                nxt = pool.submit(read, ranges[i + 1])
            yield r, data
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
