"""Sliding-window inference with blending, in plain torch: MONAI's ``sliding_window_inference``, reimplemented.

The predictor runs sliding windows for an integer ``tile`` and for 3D networks. This is
the same computation as MONAI 1.6's ``monai.inferers.sliding_window_inference`` for the
options the predictor uses (replicate padding, constant or gaussian blending with
``sigma_scale=0.125``, windows of the input's size out), operation for operation, so
the scores are bit-identical (``tests/core/test_unet.py`` checks it against MONAI's);
it exists because importing MONAI costs about 2.4 s in every fresh process
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import torch
import torch.nn.functional as F

from .tiling import window_starts

__all__ = ["importance_map", "sliding_window_inference"]


def importance_map(size: Sequence[int], mode: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Blending weights of one window: ones (``"constant"``) or a gaussian of sigma ``size / 8``, floored at 1e-3."""
    if mode == "constant":
        w = torch.ones(tuple(size), device=device, dtype=torch.float)
    elif mode == "gaussian":
        w = torch.empty(0)
        for i, n in enumerate(size):
            sigma = n * 0.125
            x = torch.arange(start=-(n - 1) / 2.0, end=(n - 1) / 2.0 + 1, dtype=torch.float, device=device)
            x = torch.exp(x**2 / (-2 * sigma**2))
            w = w.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    else:
        raise ValueError(f"blend mode {mode!r} is not 'constant' or 'gaussian'")
    low = max(torch.min(w).item(), 1e-3)
    return torch.clamp_(w.to(torch.float), min=low).to(dtype)


def sliding_window_inference(
    x: torch.Tensor,
    roi: Sequence[int],
    batch: int,
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    overlap: float = 0.25,
    mode: str = "constant",
    device: torch.device | str | None = None,
    keep: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Scores of ``fn`` over ``x`` (N, C, *spatial) in windows of ``roi``, blended where they overlap.

    A side smaller than the window is padded (edge-replicated, evenly on both sides) and
    cropped back; windows start every ``roi * (1 - overlap)`` pixels, the last flush with
    the end; ``batch`` windows go through ``fn`` at a time; each window's scores are
    weighted by :func:`importance_map` and the sum divided by the summed weights.

    ``keep=(a, b)`` returns only positions ``a:b`` of the first spatial axis (the same
    numbers as the whole result's): the sums are kept for those alone, so a 3D network's
    context slices, computed and dropped, take no memory for sums.

    Examples
    --------
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> torch.equal(sliding_window_inference(x, (2, 2), 4, lambda t: t * 2), x * 2)
    True
    >>> torch.equal(sliding_window_inference(x, (2, 2), 4, lambda t: t * 2, keep=(1, 3)), x[:, :, 1:3] * 2)
    True
    """
    dims = x.dim() - 2
    if len(roi) != dims:
        raise ValueError(f"roi {tuple(roi)} has {len(roi)} sides for {dims} spatial dimensions")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}")
    dtype, device = x.dtype, torch.device(device) if device is not None else x.device
    n, _, *shape = x.shape
    roi = tuple(int(r) for r in roi)
    size = tuple(max(s, r) for s, r in zip(shape, roi))
    pad: list[int] = []
    for k in range(dims - 1, -1, -1):  # F.pad's order: last axis first
        diff = max(roi[k] - shape[k], 0)
        pad += [diff // 2, diff - diff // 2]
    if any(pad):
        x = F.pad(x, pad=pad, mode="replicate")
    first = pad[2 * (dims - 1)]  # padding before the first spatial axis
    lo, hi = (first, first + shape[0]) if keep is None else (first + keep[0], first + keep[1])
    if not first <= lo < hi <= first + shape[0]:
        raise ValueError(f"keep {keep} is not within the first spatial axis of {shape[0]}")
    starts = [window_starts(s, r, overlap) for s, r in zip(size, roi)]
    windows = [tuple(slice(s, s + r) for s, r in zip(corner, roi)) for corner in product(*starts)]
    w = importance_map(roi, mode, x.device, dtype)[None, None]
    if len(windows) == 1 and n <= batch:  # one pass
        out = fn(x).to(device)[:, :, lo:hi]  # whole slices, a 3D net's run: no sums to keep
        if out.dtype != dtype:
            out = out.to(dtype)
        wd = w.to(device)[:, :, lo:hi]
        out = out.mul(wd).div_(wd)  # the arithmetic of the sums below, for the same scores
        return _crop(out, pad, shape, first_done=True)
    total = n * len(windows)
    out: torch.Tensor | None = None
    count: torch.Tensor | None = None

    def kept(win: tuple[slice, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Where window ``win`` lands in the sums, and which part of it does."""
        a, b = max(win[0].start, lo), min(win[0].stop, hi)
        return (slice(a - lo, b - lo), *win[1:]), (slice(a - win[0].start, b - win[0].start),)

    for g in range(0, total, batch):
        idx = [(i // len(windows), windows[i % len(windows)]) for i in range(g, min(g + batch, total))]
        parts = [x[(slice(b, b + 1), slice(None), *win)] for b, win in idx]
        scores = fn(torch.cat(parts) if batch > 1 else parts[0])
        if out is None:
            out = torch.zeros((n, scores.shape[1], hi - lo, *size[1:]), dtype=dtype, device=device)
            count = torch.zeros((1, 1, hi - lo, *size[1:]), dtype=dtype, device=device)
            wd = w.to(device)
            for win in windows:
                if win[0].start < hi and win[0].stop > lo:
                    to, part = kept(win)
                    count[(slice(None), slice(None), *to)] += wd[(slice(None), slice(None), *part)]
        scores = (scores * w).to(device)
        for (b, win), s in zip(idx, scores):
            if win[0].start < hi and win[0].stop > lo:  # (windows are run all the same: the same batches)
                to, part = kept(win)
                out[(slice(b, b + 1), slice(None), *to)] += s[(slice(None), *part)]
    assert out is not None and count is not None
    out /= count
    return _crop(out, pad, shape, first_done=True)


def _crop(out: torch.Tensor, pad: list[int], shape: Sequence[int], *, first_done: bool = False) -> torch.Tensor:
    """``out`` without the padding ``pad`` (:func:`torch.nn.functional.pad`'s order) around ``shape``.

    ``first_done``: the first spatial axis is cropped already.
    """
    if not any(pad):
        return out
    dims = len(shape)
    crop = [slice(pad[2 * (dims - 1 - d)], pad[2 * (dims - 1 - d)] + shape[d]) for d in range(dims)]
    if first_done:
        crop[0] = slice(None)
    return out[(slice(None), slice(None), *crop)]
