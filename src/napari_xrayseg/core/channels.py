"""Multi-channel images (phase + absorption, dual energy, RGB) seen as one lazy volume per channel.

A :class:`ChannelStack` wraps an array with a channel axis the user declared. Its ``shape``
is the spatial shape (the channel axis left out), so the slab planning, the outputs and the
labels all see an ordinary 2D or 3D image; indexing it reads every channel of the region and
returns them channel first. Training and segmentation normalise each channel by its own
bounds and feed the network ``channels x context`` input channels (channel-major: all context
slices of channel 0, then of channel 1, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["MAX_CHANNELS", "ChannelStack", "check_rgb_mode", "split_channels"]

#: Most channels a model may take.
MAX_CHANNELS = 16


class _ChannelView:
    """One channel of an array, read lazily: ``view[idx]`` reads ``source[idx with c at axis]``."""

    def __init__(self, source: Any, axis: int, c: int) -> None:
        self.source, self.axis, self.c = source, axis, c
        self.shape = tuple(int(s) for i, s in enumerate(source.shape) if i != axis)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)
        chunks = getattr(source, "chunks", None)
        if chunks is not None and chunks and not isinstance(chunks[0], tuple):
            self.chunks = tuple(int(v) for i, v in enumerate(chunks) if i != axis)

    def __getitem__(self, index: Any) -> np.ndarray:
        idx = list(index) if isinstance(index, tuple) else [index]
        if any(i is Ellipsis for i in idx):
            e = idx.index(Ellipsis)
            idx[e : e + 1] = [slice(None)] * (self.ndim - (len(idx) - 1))
        idx += [slice(None)] * (self.ndim - len(idx))
        idx.insert(self.axis, self.c)
        return np.asarray(self.source[tuple(idx)])


class ChannelStack:
    """An image with a channel axis, as ``channels`` lazy single-channel volumes.

    Attributes
    ----------
    views : list
        One lazily read array per channel, each of the spatial shape.
    shape : tuple of int
        The spatial shape (without the channel axis).
    channels : int
        Number of channels.
    channel_axis : int
        The channel axis of the source array.
    """

    def __init__(self, source: Any, channel_axis: int) -> None:
        self.source, self.channel_axis = source, channel_axis
        self.channels = int(source.shape[channel_axis])
        self.views = [_ChannelView(source, channel_axis, c) for c in range(self.channels)]
        v = self.views[0]
        self.shape, self.dtype, self.ndim = v.shape, v.dtype, v.ndim
        if hasattr(v, "chunks"):
            self.chunks = v.chunks

    def __getitem__(self, index: Any) -> np.ndarray:
        """Every channel of ``index`` (a spatial index), channel first."""
        return np.stack([v[index] for v in self.views])

    def __repr__(self) -> str:
        return f"ChannelStack({self.channels} channels along axis {self.channel_axis}, shape {self.shape})"


def resolve_channel_axis(shape: tuple[int, ...], channels: int, trained_axis: int | None) -> int:
    """The axis of an image of ``shape`` that holds a ``channels``-channel model's channels.

    The axis the model was trained with (``trained_axis``), unless that axis does not hold
    ``channels`` entries and exactly one other axis does (a C,Z,Y,X file, as OME-Zarr orders
    channels, for a model trained on Z,C,Y,X): then that one.

    Examples
    --------
    >>> resolve_channel_axis((2, 8, 64, 64), 2, 1), resolve_channel_axis((8, 2, 64, 64), 2, 1)
    (0, 1)
    """
    shape = tuple(int(n) for n in shape)
    ax = trained_axis if trained_axis is not None and trained_axis < len(shape) else 0
    holding = [i for i, n in enumerate(shape) if n == channels]
    if shape[ax] != channels and len(holding) == 1 and len(shape) in (3, 4):
        return holding[0]
    return ax


def check_rgb_mode(rgb: str | None, channels: int) -> None:
    """Refuse ``rgb="channels"`` (three colour planes as channels) for a model that takes one channel.

    The (3, Y, X) planes were segmented as a 3-slice volume, each colour the others' context (QA).
    """
    if rgb == "channels" and channels == 1:
        raise InputError(
            "rgb='channels' (--rgb channels) reads the colour planes as 3 channels but the model takes one: use "
            "rgb='luminance' (--rgb luminance) for a model trained on grey images"
        )


def split_channels(image: Any, channel_axis: int, *, channels: int | None = None, what: str = "image") -> ChannelStack:
    """Declare ``image``'s channel axis: a :class:`ChannelStack` of its channels.

    Parameters
    ----------
    image : array-like of shape (C, Y, X), (Z, C, Y, X), ...
        A 2D or 3D image with one more axis holding the channels (numpy, dask, zarr, h5py).
    channel_axis : int
        The channel axis (negative counts from the end).
    channels : int, optional
        The number of channels expected (a model's): a different count is an error.
    what : str
        Names the image in messages.

    Raises
    ------
    InputError
        On a bad axis, an image that is not 3D or 4D, too many channels, or a channel count
        other than ``channels``.

    Examples
    --------
    >>> s = split_channels(np.zeros((4, 2, 8, 8)), 1)
    >>> s.shape, s.channels, s[1:3].shape
    ((4, 8, 8), 2, (2, 2, 8, 8))
    """
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    ndim = len(image.shape)
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise InputError(f"channel_axis {channel_axis!r} must be an integer axis of the {what}")
    if channels is not None and ndim == 2:  # a grey image for a colour model (QA: a message about dimensions)
        raise InputError(
            f"{what} is one grey 2D image (shape {tuple(image.shape)}) but the model takes {channels} channels: give "
            f"an image with {channels} channels (a colour file: rgb='channels', --rgb channels), or use a model "
            "trained on grey images"
        )
    if ndim not in (3, 4):
        raise InputError(
            f"{what} has {ndim} dimensions (shape {tuple(image.shape)}): with a channel axis give a 2D "
            "or 3D image plus one axis of channels"
        )
    if not -ndim <= channel_axis < ndim:
        raise InputError(f"channel_axis {channel_axis} is not an axis of the {what} (shape {tuple(image.shape)})")
    ax = int(channel_axis) % ndim
    n = int(image.shape[ax])
    if channels is not None and n != channels:
        hint = f" (shape {tuple(image.shape)}"
        hint += ": an image without a channel axis?)" if n > MAX_CHANNELS else ")"
        raise InputError(
            f"{what} has {n} channel{'s' if n != 1 else ''} along axis {ax} but the model takes {channels}{hint}: "
            "give the channels the model was trained on, in the same order (choose their axis with channel_axis=, "
            "--channel-axis)"
        )
    if not 1 <= n <= MAX_CHANNELS:
        raise InputError(
            f"{what} has {n} entries along channel_axis {ax}: at most {MAX_CHANNELS} channels; is it the right axis?"
        )
    return ChannelStack(image, ax)
