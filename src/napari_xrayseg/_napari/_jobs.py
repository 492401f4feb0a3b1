"""Run core generators in a worker thread with a napari progress bar and Run/Cancel.

Written once and reused by every widget:

1. the widget validates and snapshots its inputs on the main thread;
2. :meth:`JobRunner.start` creates the progress bar (main thread) and runs the
   generator in a ``thread_worker``; ``yielded`` updates the bar, ``returned`` calls
   the widget back, errors become notifications;
3. the run button toggles to *Cancel*, which sets the job's :class:`CancelToken`
   (not ``worker.quit()``: that stops the generator between yields without letting the
   core raise ``Cancelled``, so a training would lose its best-so-far model);
4. the running worker is kept as ``runner.job`` so tests can wait on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Container, PushButton
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info

from ..core.errors import Cancelled, XraysegError
from ..core.progress import CancelToken, Progress

log = logging.getLogger(__name__)


class JobRunner:
    """Owns one background job at a time for a widget.

    Parameters
    ----------
    button : magicgui.widgets.PushButton
        The widget's run button; its text becomes "Cancel" while a job runs.
    run_text : str
        The button's idle text.
    """

    def __init__(self, button: PushButton, run_text: str) -> None:
        self.button = button
        self.run_text = run_text
        self.job: Any = None  # the latest worker (kept after it finishes, for tests)
        self._running = False
        self.token: CancelToken | None = None
        self._bar: Any = None
        self._after: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        """Whether a job is in flight."""
        return self._running

    def start(self, gen_fn: Callable[..., Generator[Progress, None, Any]], *, desc: str, total: int,
              on_returned: Callable[[Any], None], on_yielded: Callable[[Progress], None] | None = None,
              on_cancelled: Callable[[Cancelled], None] | None = None, **kwargs: Any) -> Any:
        """Run ``gen_fn(**kwargs, cancel=token)`` in a worker thread; return the worker."""
        if self.running:
            show_error("a job is already running in this widget: wait for it or cancel it first")
            return None
        self.token = CancelToken()
        self._bar = napari_progress(total=max(total, 1), desc=desc)

        def yielded(p: Progress) -> None:
            # napari's progress bar processes Qt events inside set_description/refresh, so
            # ``_finished`` may run in the middle of this callback: work on a local reference.
            bar = self._bar
            if not self._running or bar is None:  # a queued record arriving after the job finished
                return
            bar.total = max(p.total, 1)
            bar.n = min(p.step, bar.total)
            bar.set_description(f"{desc}: {p.message}" if p.message else desc)
            bar.refresh()
            if on_yielded is not None:
                on_yielded(p)

        def errored(exc: BaseException) -> None:
            if isinstance(exc, Cancelled):
                if on_cancelled is not None:
                    on_cancelled(exc)
                else:
                    show_info(f"{desc}: cancelled")
            elif isinstance(exc, XraysegError):
                show_error(f"{desc}: {exc}")
            else:
                raise exc  # a bug: napari's own handler reports it

        worker = create_worker(gen_fn, cancel=self.token, _ignore_errors=True, **kwargs)
        worker.yielded.connect(yielded)
        worker.returned.connect(on_returned)
        worker.errored.connect(errored)
        worker.finished.connect(self._finished)
        self.job = worker
        self._running = True
        self.button.text = "Cancel"
        worker.start()
        return worker

    def toggle(self, inputs: Callable[[], dict[str, Any]], start: Callable[[dict[str, Any]], Any]) -> None:
        """The run button's handler: cancel the running job, or validate inputs and start one.

        ``inputs()`` snapshots and validates on the main thread; an
        :class:`~napari_xrayseg.core.errors.XraysegError` it raises becomes a notification.
        """
        if self.running:
            self.cancel()
            return
        try:
            kwargs = inputs()
        except XraysegError as e:
            show_error(str(e))
            return
        start(kwargs)

    def cancel(self) -> None:
        """Ask the running job to stop at its next check."""
        # Only the token: ``worker.quit()`` would abort the generator at its next yield,
        # so the core would never raise ``Cancelled`` (no partial result, no clean-up
        # of its own). The core checks the token at every batch, so this is prompt.
        if self.token is not None:
            self.token.cancel()
        self.button.text = "Cancelling..."

    def after_finish(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the current job has finished (e.g. to chain a second job)."""
        self._after.append(fn)

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.button.text = self.run_text
        self._running = False
        after, self._after = self._after, []
        for fn in after:
            fn()


class JobWidget(Container):
    """Base of the task widgets: a :class:`JobRunner` and layer choices that follow the viewer.

    Subclasses create ``self.runner`` and call :meth:`_follow_layers` at the end of
    ``__init__``. ``_job`` is the latest worker, for tests.
    """

    runner: JobRunner

    @property
    def _job(self) -> Any:
        return self.runner.job

    def _follow_layers(self, viewer: Any, handler: Callable[..., Any] | None = None) -> None:
        """Refresh layer choices (or call ``handler``) whenever layers are added or removed, and now."""
        handler = handler or self.reset_choices
        viewer.layers.events.inserted.connect(handler)
        viewer.layers.events.removed.connect(handler)
        handler()
