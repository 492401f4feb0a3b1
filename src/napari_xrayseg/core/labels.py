"""Label arrays, read and checked in one place (training, metrics and widgets alike).

Labels are non-negative integers: ``0`` means "not annotated" (or background), ``1..N``
are classes. Floats holding whole numbers are accepted; booleans, NaN, fractions and
negative values are refused with a one-line message naming the array and the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .io import read_block

__all__ = ["check_labels", "read_labels"]


def check_labels(a: np.ndarray, name: str = "labels", *, where: str = "", max_value: int | None = None) -> np.ndarray:
    """Check a block of labels and return it as integers.

    Parameters
    ----------
    a : numpy.ndarray
        The labels.
    name : str
        Names the array in messages (``"labels"``, ``"pred"``, ``"truth"``).
    where : str
        Where the block lies, e.g. ``"slices 0..3 along axis 0"``.
    max_value : int, optional
        Largest allowed value (255 for training labels, stored as uint8).

    Returns
    -------
    numpy.ndarray
        uint8 when ``max_value <= 255``; else integer labels as given (floats and 64-bit
        unsigned become int64).

    Raises
    ------
    InputError
        On booleans, a non-numeric dtype, NaN/inf, fractions, negative values or values
        above ``max_value``.

    Examples
    --------
    >>> check_labels(np.array([0.0, 2.0, 3.0]), max_value=255)
    array([0, 2, 3], dtype=uint8)
    """
    verb = "hold" if name.endswith("s") else "holds"
    at = f" ({where})" if where else ""
    kind = a.dtype.kind
    if kind == "b":
        raise InputError(
            f"{name} are boolean: give integer class labels (0 = not annotated, 1..N = classes)"
            if name == "labels"
            else f"{name} has boolean dtype: labels must be integers"
        )
    if kind not in "iuf":
        raise InputError(
            f"{name} {'have' if verb == 'hold' else 'has'} dtype {a.dtype}: give integer class labels "
            "(0 = not annotated)"
        )
    small = max_value is not None and max_value <= 255
    if a.size == 0:
        return a.astype(np.uint8 if small else np.int64)
    if kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            raise InputError(
                f"{name} {verb} non-finite values (e.g. {a[~finite].flat[0]}){at} in a {a.dtype} array: "
                "pass integer labels, e.g. np.nan_to_num(arr).astype(np.uint16)"
            )
        frac = a != np.floor(a)
        if frac.any():
            raise InputError(
                f"{name} {verb} non-integer values (e.g. {a[frac].flat[0]:g}){at} in a {a.dtype} array: "
                "pass integer labels, e.g. np.rint(arr).astype(np.uint16)"
            )
    if kind in "if":
        lo = a.min()
        if lo < 0:
            raise InputError(
                f"{name} {verb} negative values (min {lo}){at}: labels are 0 (background/not "
                "annotated) or positive integers; relabel first"
            )
    if max_value is not None or kind == "f" or (kind == "u" and a.dtype.itemsize >= 8):
        hi = a.max()
        limit = max_value if max_value is not None else np.iinfo(np.int64).max
        if hi > limit:
            raise InputError(
                f"{name} {verb} value {hi}{at}: class labels must be in 1..{limit}; relabel to fewer classes"
            )
    if small:
        return a.astype(np.uint8, copy=False)
    if kind == "f" or (kind == "u" and a.dtype.itemsize >= 8):
        return a.astype(np.int64)
    return a


def read_labels(
    arr: Any, index: Any, name: str = "labels", *, where: str = "", max_value: int | None = None
) -> np.ndarray:
    """Read ``arr[index]`` (a damaged store becomes an :class:`InputError`) and :func:`check_labels` it."""
    what = f"{name} ({where})" if where else name
    return check_labels(read_block(arr, index, what=what), name, where=where, max_value=max_value)
