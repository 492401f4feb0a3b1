"""Progress records and cancellation for long-running jobs.

Long operations come as generators (``iter_segment``, ``iter_train``) that yield
:class:`Progress` records and *return* their result; :func:`drain` runs one to the
end for console and CLI use.  Cancellation goes through a :class:`CancelToken`
that the job checks at every slab, batch and epoch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import Cancelled

__all__ = ["CancelToken", "Progress", "ProgressCallback", "drain"]

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress report of a long job.

    Parameters
    ----------
    step : int
        Units of work finished so far.
    total : int
        Units of work in the whole job.
    message : str
        Short human-readable status.
    info : dict
        Extra numbers (e.g. ``{"loss": 0.3, "val_dice": 0.9}`` during training).
    """

    step: int
    total: int
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Finished fraction in [0, 1]."""
        return min(1.0, self.step / self.total) if self.total else 0.0


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """A thread-safe flag that asks a running job to stop.

    Examples
    --------
    >>> token = CancelToken()
    >>> token.cancelled
    False
    >>> token.cancel()
    >>> token.cancelled
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was asked to stop.

        Raises
        ------
        Cancelled
            If :meth:`cancel` was called.
        """
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def check(token: CancelToken | None) -> None:
    """Check ``token`` if there is one (``None`` never cancels)."""
    if token is not None:
        token.check()


def drain(gen: Generator[Progress, None, T], callback: ProgressCallback | None = None) -> T:
    """Run a progress generator to the end and return its result.

    Parameters
    ----------
    gen : generator
        A generator yielding :class:`Progress` and returning a result.
    callback : callable, optional
        Called with each :class:`Progress` record.

    Returns
    -------
    object
        The generator's return value.
    """
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(p)
