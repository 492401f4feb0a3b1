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


def take_offer(widget: Any, path: Path) -> None:
    """Show ``path`` in ``widget``'s model field where it is empty (no model set by code) or shows the last offer.

    A field that still shows what was offered before is no choice of the user's: a second training's model
    replaces it (review: the first one stayed, as if chosen); a file the user picked stays.
    """
    shown = str(widget._model_file.value)
    offered = getattr(widget, "_offered", None)
    if (widget.model is None and shown in ("", ".")) or (offered is not None and shown == offered):
        widget._model_file.value = path
        widget._offered = str(widget._model_file.value)
