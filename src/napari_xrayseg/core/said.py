"""Warnings said once, not once per pass over the same data.

One run computes the same thing several times (the grey-level bounds for training, for the
model's record and for each ``init="auto"`` candidate; a segmentation's plan and its views),
and a warning about the data came with each pass (QA s44: a no-data hint two or three times a
run). :func:`first_time` keeps a digest of the last few data each kind of warning was said
about.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

#: Digests kept per kind of warning: the last few data it was said about.
KEPT = 8

_SAID: dict[str, list[bytes]] = {}
_QUIET = threading.local()  # a thread whose warnings nobody sees (the Annotate widget's previews)


def first_time(kind: str, *data: Any) -> bool:
    """Whether the warning ``kind`` has not been said about ``data`` lately, and note it.

    ``data``: arrays or strings (a message itself, for a warning its text identifies).

    Examples
    --------
    >>> forget()
    >>> first_time("example", np.zeros(3)), first_time("example", np.zeros(3)), first_time("example", np.ones(3))
    (True, False, True)
    """
    if getattr(_QUIET, "on", False):  # said where nobody sees it: not noted, so the next job says it
        return True
    h = hashlib.blake2b(digest_size=8)
    for d in data:
        h.update(d.encode() if isinstance(d, str) else np.ascontiguousarray(d).tobytes())
    key = h.digest()
    said = _SAID.setdefault(kind, [])
    if key in said:
        return False
    said.append(key)
    del said[:-KEPT]
    return True


def forget() -> None:
    """Forget every warning said (tests: each starts as a fresh process would)."""
    _SAID.clear()


@contextlib.contextmanager
def unseen() -> Iterator[None]:
    """Warnings in this thread go where nobody sees them: they are not noted as said.

    Review s45: the Annotate widget's preview normalised an image first, its warnings reached no
    notification, and the Segment job that followed no longer said the no-data hint at all.
    """
    before = getattr(_QUIET, "on", False)
    _QUIET.on = True
    try:
        yield
    finally:
        _QUIET.on = before
