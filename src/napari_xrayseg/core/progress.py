"""Progress records and cancellation for long-running jobs.

Long operations come as generators (``iter_segment``, ``iter_train``) that yield
:class:`Progress` records and *return* their result; :func:`drain` runs one to the
end for console and CLI use.  Cancellation goes through a :class:`CancelToken`
that the job checks at every slab, batch and epoch.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import Cancelled

__all__ = ["CancelToken", "Progress", "ProgressCallback", "drain", "signals_cancel"]

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

    A callback that raises (a notebook's progress bar, a KeyboardInterrupt in it) closes the
    generator at once: its ``finally`` blocks let go of what it holds (a model file's lock stayed
    held while the traceback was kept, and a retry in the session was refused; review).
    """
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(p)
    finally:
        gen.close()


@contextlib.contextmanager
def signals_cancel(token: CancelToken, note: str, got: list[int] | None = None, *, term: bool = True) -> Iterator[None]:
    """The first Ctrl-C cancels ``token`` (the job stops at its next check, keeping its result); the next quits.

    The second SIGINT raises ``KeyboardInterrupt`` at once. With ``term``, SIGTERM (what Slurm,
    PBS and ``timeout`` send at the time limit, before SIGKILL) cancels the same way. ``note`` is
    printed to stderr at the first signal; the signals received are appended to ``got``. Only
    the main thread can set signal handlers; elsewhere (a napari worker thread) the block runs
    as it is, as it does inside another such block (the outer one handles the signals). A
    SIGINT the process ignores (a job started with ``&`` in a script) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread() or getattr(
        signal.getsignal(signal.SIGINT), "cancels_a_job", False
    ):
        yield  # not ours to handle, or an outer block (the CLI's around train()) handles it
        return

    def handler(signum: int, frame: Any) -> None:
        if got is not None:
            got.append(signum)
        if token.cancelled:
            raise KeyboardInterrupt
        token.cancel()
        print(
            note if signum == signal.SIGINT else f"{note.split(';')[0]} (terminated);{note.partition(';')[2]}",
            file=sys.stderr,
            flush=True,
        )

    handler.cancels_a_job = True  # type: ignore[attr-defined]
    ours = [signal.SIGTERM] if term else []
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        ours.append(signal.SIGINT)
    old = {s: signal.signal(s, handler) for s in ours}
    try:
        yield
    finally:
        for s, h in old.items():
            default = signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL
            signal.signal(s, h if h is not None else default)
