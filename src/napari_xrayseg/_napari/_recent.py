"""The model file the Train widget saved last in this session, offered by Segment and Annotate.

A newcomer who trained a model found the Segment and Annotate widgets' model fields empty and had
to browse for the file just written (QA). A widget whose field is still empty takes it; one where
the user chose a file keeps that.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

_last: list[Path] = []
_listeners: list[Any] = []  # weak references to bound methods: a closed widget is not kept alive


def model_saved(path: str | Path) -> None:
    """Announce a model file just written (Train widget)."""
    _last[:] = [Path(path)]
    for ref in list(_listeners):
        method = ref()
        if method is None:
            _listeners.remove(ref)
            continue
        try:
            method(Path(path))
        except RuntimeError:  # its Qt widget was deleted
            _listeners.remove(ref)


def offer_models(method: Callable[[Path], None]) -> None:
    """Call ``method(path)`` (a widget's bound method) with every model saved from now on, and the last one now."""
    _listeners.append(weakref.WeakMethod(method))  # type: ignore[arg-type]
    if _last and _last[0].is_file():
        method(_last[0])
