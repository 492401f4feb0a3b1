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

__all__ = ["check_labels", "names_by_label", "read_labels"]


def names_by_label(names: Any, present: Any, *, what: str = "classes", zero: bool = False) -> dict[int, str]:
    """Class names given as a mapping or a list, as ``{label: name}``.

    A list names the classes present, in the order of their label values (as ``train`` always
    did; 0 too with ``zero``, where 0 is a class), or, exactly as long as the largest label,
    labels 1, 2, 3, .... Any other length is refused: a list one too long named each class by
    the name of the label below it.
    Labels {1, 2, 5, 17} take 4 names or 17; before, ``evaluate`` wanted 17 and ``analyze`` gave
    labels {2, 4, 6} the names of 1, 2 and 3, its phase 2 called by the second name (QA).

    Raises
    ------
    InputError
        For a list of another length, naming both choices.

    Examples
    --------
    >>> names_by_label(["pore", "nickel", "YSZ"], [0, 2, 4, 6])
    {2: 'pore', 4: 'nickel', 6: 'YSZ'}
    >>> names_by_label(["a", "b", "c", "d", "e"], [1, 5])
    {1: 'a', 2: 'b', 3: 'c', 4: 'd', 5: 'e'}
    >>> names_by_label(["pore", "Ni", "YSZ"], [0, 1, 2], zero=True)
    {0: 'pore', 1: 'Ni', 2: 'YSZ'}
    """
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    given = [str(n) for n in names]
    labels = sorted({int(c) for c in present} - (set() if zero else {0}))
    if len(given) == len(labels):
        return dict(zip(labels, given))
    if labels and len(given) == labels[-1] and 0 not in labels:
        return {i + 1: n for i, n in enumerate(given)}
    raise InputError(
        f"{len(given)} class names for the {len(labels)} {what} {labels}: give one per class, in the order of their "
        f"label values (--names), or one per label 1 to {labels[-1] if labels else 1}"
    )


def ignore_index_hint(counts: dict[int, int], what: str = "annotated") -> str | None:
    """A warning where label 255 looks like an ignore index (voxels not annotated) beside small class labels, else None.

    PyTorch's ``ignore_index=255`` and many annotation tools write 255 for "not annotated"; here
    0 is. Such labels trained a fourth class covering every unpainted pixel (QA s44: mean Dice
    0.53 against 0.84 with 0). Said where 255 sits beside at least two classes below 128
    (``counts``: voxels per label value, 0 left out).

    Examples
    --------
    >>> ignore_index_hint({1: 10, 2: 10, 3: 10, 255: 90})[:60]
    'label 255 holds 75 % of the annotated voxels beside classes '
    >>> ignore_index_hint({1: 10, 255: 90}) is None  # a 0/1/255 mask: no guess
    True
    """
    others = sorted(int(c) for c, n in counts.items() if n and c not in (0, 255))
    if not counts.get(255) or len(others) < 2 or max(others) >= 128:
        return None
    share = counts[255] / sum(n for c, n in counts.items() if c != 0)
    return (
        f"label 255 holds {100 * share:.0f} % of the {what} voxels beside classes {', '.join(map(str, others))}: "
        "many tools write 255 for voxels not annotated (an ignore index), where 0 means that here; if 255 is "
        "not a phase, set it to 0 first (labels[labels == 255] = 0)"
    )


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
        if (float(hi) if kind == "f" else int(hi)) > limit:  # float16 against int64's max: no overflow warning
            raise InputError(
                f"{name} {verb} value {hi}{at}: class labels must be in 1..{limit}"
                + (" (models write 8-bit labels)" if limit == 255 else "")
                + "; renumber them, e.g. 1, 2, 3 for the values present (0 stays not annotated)"
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
