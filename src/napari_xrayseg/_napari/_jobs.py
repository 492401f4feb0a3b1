"""Run core generators in a worker thread with a napari progress bar and Run/Cancel.

Written once and reused by every widget:

1. the widget validates and snapshots its inputs on the main thread;
2. :meth:`JobRunner.start` creates the progress bar (main thread) and runs the
   generator in a ``thread_worker``; ``yielded`` updates the bar, ``returned`` calls
   the widget back, errors become notifications;
3. the run button toggles to *Cancel*, which sets the job's :class:`CancelToken`
   (not ``worker.quit()``: that stops the generator between yields without letting the
   core raise ``Cancelled``, so a training would lose its best-so-far model);
4. the running worker is kept as ``runner.job`` so tests can wait on it;
5. one job at a time per widget: starting another while one runs is refused with a
   message (outputs are claimed atomically by the core, so two widgets never write
   the same file either);
6. closing napari, closing the widget's dock (its "x") or deleting the widget cancels
   the job through its token: napari (0.6.5 and later) calls the worker's ``quit`` on close,
   which here sets the token, and the viewer window's ``destroyed`` signal does it on any
   napari (an undocked widget's job ran on before 0.6.5); the dock's "x" only takes the
   widget out of its dock (napari neither deletes nor tells it), which :class:`JobWidget` watches for; the run button's
   ``destroyed`` signal does the same. Callbacks into the closed GUI are then skipped,
   and what a job keeps when cancelled (a training's model so far) is saved by its
   ``salvage`` in the worker thread, as the widget's Cancel would.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Container, Label, PushButton
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import notifications
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_info

from ..core.device import release_memory
from ..core.errors import USER_WRITE_ERRNOS, Cancelled, XraysegError, for_gui, out_of_memory, write_error
from ..core.progress import CancelToken, Progress

log = logging.getLogger(__name__)


#: On close, how long the GUI waits for a cancelled job to stop (and save what it keeps) before it goes on.
SHUTDOWN_WAIT_S = 30.0


def _wait_for(done: threading.Event | None, desc: str) -> None:
    """Wait for a cancelled job's thread to end.

    Left running, it signalled into deleted Qt objects as Python exited (napari aborted,
    "wrapped C/C++ object ... has been deleted"), and what it saves could be cut off.
    """
    if done is None or done.is_set():
        return
    if not done.wait(SHUTDOWN_WAIT_S):
        log.warning("%s did not stop within %g s of its window closing", desc, SHUTDOWN_WAIT_S)
        return
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(2000)  # its last signals (returned, finished) sent


def show_error(message: object) -> None:
    """An error notification in the widgets' words (:func:`~napari_xrayseg.core.errors.for_gui`)."""
    notifications.show_error(for_gui(message))


def show_warning(message: object) -> None:
    """A warning notification in the widgets' words (:func:`~napari_xrayseg.core.errors.for_gui`)."""
    notifications.show_warning(for_gui(message))


class _TokenWorker(GeneratorWorker):
    """A generator worker whose ``quit`` cancels the job through its :class:`CancelToken`.

    napari registers ``worker.quit`` with the viewer's task list and calls it when the
    window closes. The plain ``quit`` stops the generator at its next yield without
    running the core's clean-up (finished slabs flushed, read-ahead thread joined,
    ``Cancelled`` raised); here it calls :meth:`JobRunner.shutdown`, which sets the
    token, so the core stops at its next check instead.
    """

    on_quit: Callable[[], None] | None = None

    def quit(self) -> None:
        """Ask the job to stop at its next cancel check (napari calls this on close)."""
        if self.on_quit is not None:
            self.on_quit()


class _Warnings(logging.Handler):
    """The warnings the core logs while a job runs, shown in napari when it ends.

    The command line prints them (``logging``); a napari user sees no log, so hints such as
    "pass nodata=0" or "training in fp32" become notifications. Only the job's own: those
    logged from its worker thread and the core's helper threads (``xrayseg-*``: reading ahead,
    loading the model). Another widget's job, or another window's, logs from threads of its
    own (a Segment in one window showed the no-data hint of the image segmented in the other).
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.skip = 0  # the first ``skip`` messages were shown before the job began
        self.threads: set[int] = set()  # the job's worker thread, once it runs

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread not in self.threads and not (record.threadName or "").startswith("xrayseg-"):
            return
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


def _connect(worker: Any, **slots: Callable[..., Any]) -> list[tuple[str, Callable[..., Any]]]:
    """Connect each of ``slots`` to the worker's signal of its name; what :func:`_let_go` disconnects."""
    for name, slot in slots.items():
        getattr(worker, name).connect(slot)
    return list(slots.items())


def _let_go(worker: Any, slots: list[tuple[str, Callable[..., Any]]]) -> None:
    """Disconnect a finished worker's ``slots``: napari 0.9 keeps every worker until its window closes.

    Its task list holds ``worker.quit``, so the worker, its signals' slots and what those closures
    hold (a job's inputs: each Train run's copy of the annotations, each preview's image) lived as
    long as napari (QA s44: +7 MB a Train run on 6.6 MB of labels, 112 workers after a short session).
    """
    for name, slot in slots:
        with contextlib.suppress(TypeError, RuntimeError):  # not connected, or the Qt side is gone
            getattr(worker, name).disconnect(slot)


class JobRunner:
    """Owns one background job at a time for a widget.

    Parameters
    ----------
    button : magicgui.widgets.PushButton
        The widget's run button; its text becomes "Cancel" while a job runs.
    run_text : str
        The button's idle text.
    """

    def __init__(self, button: PushButton, run_text: str, status: Label | None = None) -> None:
        self.button = button
        self.run_text = run_text
        self.status = status  # shows the running job's progress in the widget, and how it ended
        self.job: Any = None  # the latest worker (kept after it finishes, for tests)
        self._running = False
        self.token: CancelToken | None = None
        self._bar: Any = None
        self._after: list[Callable[[], None]] = []
        self._closed = False  # the GUI went away (window closed, widget deleted)
        self._done: threading.Event | None = None  # set when the running job's thread is done with it
        self.desc_running = ""
        self._warnings: _Warnings | None = None  # the running job's logged warnings
        self._slots: list[tuple[str, Callable[..., Any]]] = []  # what start() connected to the running worker
        try:
            button.native.destroyed.connect(self.shutdown)
        except (AttributeError, RuntimeError):  # pragma: no cover - a button without a Qt widget
            pass

    @property
    def running(self) -> bool:
        """Whether a job is in flight."""
        return self._running

    def start(
        self,
        gen_fn: Callable[..., Generator[Progress, None, Any]],
        *,
        desc: str,
        total: int,
        on_returned: Callable[[Any], None],
        on_yielded: Callable[[Progress], None] | None = None,
        on_cancelled: Callable[[Cancelled], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        salvage: Callable[[Cancelled], None] | None = None,
        shown: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Run ``gen_fn(**kwargs, cancel=token)`` in a worker thread; return the worker.

        Warnings the core logs meanwhile are shown when it ends, except those in ``shown``
        (the widget showed them already). ``on_failed(message)`` follows the error notification
        of a failed job (e.g. to replace a "running..." status). ``salvage(cancelled)`` runs in
        the worker thread when the job stops because its GUI went away (napari closed, the dock
        closed), where ``on_cancelled`` can no longer run: it keeps what Cancel would have kept.
        """
        if self.running:
            show_error("a job is already running in this widget: wait for it or cancel it first")
            return None
        if self._closed:
            return None
        self.token = CancelToken()
        self._bar = napari_progress(total=max(total, 1), desc=desc)
        self._warnings = _Warnings()
        self._warnings.messages.extend(m for m in shown if m)
        self._warnings.skip = len(self._warnings.messages)
        logging.getLogger("napari_xrayseg").addHandler(self._warnings)
        status = self.status
        if status is not None:
            status.value = f"{desc}..."
        ended: list[bool] = []  # this job returned or failed: a progress record queued behind that is stale
        out = kwargs.get("out")  # not kwargs itself: a closure of the worker's keeps what it holds (see _let_go)

        def yielded(p: Progress) -> None:
            # napari's progress bar processes Qt events inside set_description/refresh, so
            # ``_finished`` may run in the middle of this callback: work on a local reference.
            bar = self._bar
            if not self._running or bar is None or self._closed:  # late record, or the GUI is gone
                return
            bar.total = max(p.total, 1)
            bar.n = min(p.step, bar.total)
            bar.set_description(f"{desc}: {p.message}" if p.message else desc)
            bar.refresh()
            # refresh() may have run returned/finished already: a late record must not
            # overwrite what the finished job showed (e.g. the Train widget's final status)
            if ended or not self._running or self._closed:
                return
            if status is not None:
                status.value = f"{desc}: {100 * p.fraction:.0f} %{' ' + p.message if p.message else ''}"
            if on_yielded is not None:
                on_yielded(p)

        def returned(result: Any) -> None:
            ended.append(True)
            if self._closed:  # nowhere to show it: the window closed while the job ran
                log.info("%s finished after its window closed; result dropped", desc)
                return
            on_returned(result)

        def errored(exc: BaseException) -> None:
            ended.append(True)
            if self._closed and isinstance(exc, (Cancelled, XraysegError)):
                log.info("%s stopped after its window closed: %s", desc, exc)
                return
            if isinstance(exc, Cancelled):
                if status is not None:
                    status.value = f"{desc}: cancelled"
                if on_cancelled is not None:
                    on_cancelled(exc)
                else:
                    show_info(f"{desc}: cancelled")
            elif isinstance(exc, XraysegError):
                show_error(f"{desc}: {exc}")
            elif isinstance(exc, OSError) and exc.errno in USER_WRITE_ERRNOS:  # disk full, read-only...
                exc = write_error(exc, out, option="output path")
                show_error(f"{desc}: {exc}")
            else:
                failed("an unexpected error (details in napari's error report)")
                raise exc  # a bug: napari's own handler reports it
            if not isinstance(exc, Cancelled):
                failed(for_gui(exc))

        def failed(why: str) -> None:  # the status line, and the widget's own, say how the job ended
            if status is not None:
                status.value = f"{desc} failed: {why}"
            if on_failed is not None:
                on_failed(why)

        warnings = self._warnings
        done = self._done = threading.Event()

        # napari keeps every worker, and with it this function, until its window closes: what the job
        # needs (the widget's closures over its inputs) is let go of when it ends (see _let_go)
        held: dict[str, Any] = {"gen_fn": gen_fn, "salvage": salvage}

        def run(**kw: Any) -> Generator[Progress, None, Any]:
            warnings.threads.add(threading.get_ident())  # the warnings of this thread are this job's
            salvage = held["salvage"]
            try:
                return (yield from held["gen_fn"](**kw))
            except Cancelled as e:
                if self._closed and salvage is not None:  # no GUI to hand it to: keep it here
                    try:
                        salvage(e)
                    except Exception:  # noqa: BLE001 - the job is over either way: say so in the log
                        log.exception("%s: could not keep what the cancelled job made", desc)
                raise
            except (RuntimeError, MemoryError) as e:  # superqt takes a RuntimeError for a deleted worker (QA)
                if isinstance(e, XraysegError) and not isinstance(e, RuntimeError):
                    raise
                raise _not_a_runtime_error(e, desc) from None  # from None: the failed frames' tensors can go
            finally:  # here, not on the GUI thread: a napari session lives on, give GPU memory back
                held.clear()
                salvage = None
                release_memory()
                done.set()

        self.desc_running = desc
        worker = create_worker(run, cancel=self.token, _ignore_errors=True, _worker_class=_TokenWorker, **kwargs)
        worker.on_quit = self.shutdown
        self._slots = _connect(worker, yielded=yielded, returned=returned, errored=errored, finished=self._finished)
        self.job = worker
        self._running = True
        self.button.text = "Cancel"
        _ignore_a_double_click(self.button)
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

    def shutdown(self, *_: Any) -> None:
        """Cancel the running job for good: the GUI it reports to is going away.

        Connected to the run button's ``destroyed`` signal; safe to call twice. The job
        stops at its next cancel check and its results are dropped.
        """
        self._closed = True
        self._after = []
        if self.token is not None and self._running:
            log.info("cancelling the running job: its widget was closed")
            self.token.cancel()
            _wait_for(self._done, self.desc_running)

    def after_finish(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the current job has finished (e.g. to chain a second job)."""
        self._after.append(fn)

    def _finished(self) -> None:
        _let_go(self.job, self._slots)
        self._slots = []
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        warned = self._warnings
        if warned is not None:
            logging.getLogger("napari_xrayseg").removeHandler(warned)
            self._warnings = None
            if not self._closed:
                for msg in warned.messages[warned.skip :]:
                    show_warning(msg)
        self._running = False
        if self._closed:
            return
        try:
            self.button.text = self.run_text
        except RuntimeError:  # the Qt button was deleted with its window
            self._closed = True
            return
        after, self._after = self._after, []
        for fn in after:
            fn()


class JobBug(Exception):
    """A job's unexpected ``RuntimeError``, carried to the GUI thread as another type (napari reports it).

    superqt's worker treats a ``RuntimeError`` from the job as "the worker was deleted": it prints a
    warning and emits neither ``errored`` nor ``finished``, so the widget stayed "running" (QA: a CUDA
    out-of-memory error in training, any CUDA error in segmenting, a cluster failure).
    """


def _not_a_runtime_error(e: BaseException, desc: str) -> Exception:
    """``e`` as an exception superqt passes on: out of memory and our own errors as theirs, else a :class:`JobBug`."""
    if (oom := out_of_memory(e, desc[:1].lower() + desc[1:])) is not None:
        return oom
    if isinstance(e, XraysegError):  # a ClusterError
        return XraysegError(str(e))
    bug = JobBug(f"{type(e).__name__}: {e}")
    bug.with_traceback(e.__traceback__)
    return bug


def _ignore_a_double_click(button: PushButton) -> None:
    """Disable ``button`` for the platform's double-click interval.

    The run button becomes Cancel as the job starts: the second click of a double click
    cancelled the job at once, leaving no result and no notification. Signals emitted by code
    (and tests) are not blocked; only the mouse is.
    """
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    native = button.native

    def enable() -> None:
        try:
            native.setEnabled(True)
        except RuntimeError:  # the widget was closed meanwhile
            pass

    native.setEnabled(False)
    QTimer.singleShot(QApplication.styleHints().mouseDoubleClickInterval(), enable)


def text_label(value: str = "") -> Label:
    """A label for status lines and results: wrapped, left-aligned, and never wider than the dock.

    A long line (a saved model's path, a list of suggestions) would otherwise widen the dock
    and squeeze napari's canvas.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value)
    label.native.setWordWrap(True)
    label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    label.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # paths can be copied
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    return label


class JobWidget(Container):
    """Base of the task widgets: a :class:`JobRunner` and layer choices that follow the viewer.

    Subclasses create ``self.runner`` and call :meth:`_follow_layers` at the end of
    ``__init__``. ``_job`` is the latest worker, for tests.

    The widget scrolls: docked beside others (or on a laptop screen) it keeps napari's window
    inside the screen. magicgui's ``scrollable=True`` puts the scroll area *around* ``native``,
    which napari does not dock (it docks ``native``); so here the scroll area is *inside*
    ``native``, and the widgets go into a page inside it.
    """

    runner: JobRunner

    def __init__(self, **kwargs: Any) -> None:
        from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

        super().__init__(**kwargs)
        self._close_hooks: list[Callable[[], None]] = []
        self._close_watch = _undock_watch(self.native, self._on_close)
        outer = self.native.layout()
        page = QWidget()
        inner = QVBoxLayout(page)
        inner.setContentsMargins(outer.contentsMargins())
        inner.setSpacing(outer.spacing())
        outer.setContentsMargins(0, 0, 0, 0)
        self._widget._layout = inner  # magicgui's Qt container inserts its widgets into this layout
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(page)
        outer.addWidget(self.scroll)
        self._page, self._outer = page, outer

    def pin(self, *widgets: Any) -> None:
        """Keep ``widgets`` (the run button, the status line) below the scrolled settings, always in view.

        A long form in a short window (napari's default 1089x630) put the run button and the
        progress below the fold: the user saw neither without scrolling.
        """
        inner = self._page.layout()
        for w in widgets:
            row = w.native
            while row.parentWidget() is not None and row.parentWidget() is not self._page:
                row = row.parentWidget()  # magicgui wraps a labelled widget in a row of its own
            if row.parentWidget() is self._page:
                inner.removeWidget(row)
                self._outer.addWidget(row)

    def pin_status(self, label: Label, lines: int = 3) -> None:
        """Keep the status line ``label`` below the scrolled settings, at most ``lines`` lines high.

        The progress of a running job ("epoch 3 of 40 ... val Dice 0.91") was below the fold
        in napari's default window. A longer text (a saved model's path) is cut at ``lines``
        lines rather than making the dock (and napari's window) taller; its tooltip holds it all.
        """
        from qtpy.QtCore import Qt

        self.pin(label)
        native = label.native
        native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        native.setMaximumHeight(lines * native.fontMetrics().lineSpacing() + 8)
        label.changed.connect(lambda value: native.setToolTip(str(value)))

    def span(self, *widgets: Any) -> None:
        """Give ``widgets`` (plots, tables, status lines) the form's whole width, without the label column.

        In a labelled form they sat in the value column: at napari's default window the Annotate
        plot was 256 px wide, its legend over its data, and the Train plot's ticks ran together.
        """
        inner = self._page.layout()
        for w in widgets:
            row = w.native
            while row.parentWidget() is not None and row.parentWidget() is not self._page:
                row = row.parentWidget()  # magicgui's row of a labelled widget
            if row is w.native or row.parentWidget() is not self._page:
                continue
            inner.insertWidget(inner.indexOf(row), w.native)  # takes it out of its row
            row.hide()

    @property
    def _job(self) -> Any:
        return self.runner.job

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the widget's dock is closed (its jobs are cancelled then too)."""
        self._close_hooks.append(fn)

    def _on_close(self) -> None:
        for v in list(vars(self).values()):  # every runner of the widget: a closed dock runs nothing
            if isinstance(v, (JobRunner, LatestRunner)):
                v.shutdown()
        hooks, self._close_hooks = self._close_hooks, []
        for fn in hooks:
            fn()

    def _follow_layers(self, viewer: Any, handler: Callable[..., Any] | None = None) -> None:
        """Refresh layer choices (or call ``handler``) whenever layers are added or removed, and now."""
        handler = handler or self.reset_choices
        viewer.layers.events.inserted.connect(handler)
        viewer.layers.events.removed.connect(handler)
        handler()
        _on_viewer_closed(viewer, self)


def _on_viewer_closed(viewer: Any, widget: JobWidget) -> None:
    """Cancel ``widget``'s jobs when ``viewer``'s window goes, docked or not.

    napari from 0.6.5 cancels its workers on close; before (0.5.1 to 0.6.4, which pyproject allows),
    a widget made in the console and never docked trained on with no GUI until Python exited (QA h4).
    """
    import warnings
    import weakref

    with warnings.catch_warnings():  # napari 0.9 warns of the private access (QA h6): guarded, as it may go
        warnings.simplefilter("ignore", FutureWarning)
        qt = getattr(getattr(viewer, "window", None), "_qt_window", None)
    destroyed = getattr(qt, "destroyed", None)
    if destroyed is None:
        return
    ref = weakref.ref(widget)

    def closed(*_: Any) -> None:
        w = ref()
        if w is not None:
            with contextlib.suppress(RuntimeError):  # its Qt side deleted first: its jobs were stopped then
                w._on_close()

    destroyed.connect(closed)


def _undock_watch(widget: Any, on_close: Callable[[], None]) -> Any:
    """Call ``on_close`` once when ``widget``, after having had a parent (a dock), loses it.

    napari's dock "x" (``remove_dock_widget``) does ``widget.setParent(None)`` and nothing
    else: no close event, no deletion. Returns the event filter (a child of ``widget``).
    """
    from qtpy.QtCore import QEvent, QObject

    class Watch(QObject):
        def __init__(self) -> None:
            super().__init__(widget)
            self.docked = widget.parent() is not None
            self.done = False

        def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.ParentChange and not self.done:
                if obj.parent() is not None:
                    self.docked = True
                elif self.docked:
                    self.done = True
                    on_close()
            return False

    watch = Watch()
    widget.installEventFilter(watch)
    return watch


class LatestRunner:
    """Runs quick jobs (e.g. a one-slice preview) in a worker thread, latest request wins.

    At most one job runs at a time. A request made while one runs replaces any request
    still waiting (stale ones are dropped, never run); when the running job finishes,
    the latest waiting request starts. The GUI never waits: ``request`` returns at once.
    Results come back on the main thread through ``on_returned(key, result)``; the
    caller compares ``key`` with what it shows now and may drop a stale result.

    ``job`` is the latest worker (for tests), ``busy`` whether one runs.
    """

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.job: Any = None
        self._pending: tuple[Any, Callable[..., Any], Callable[[Any, Any], None], dict[str, Any]] | None = None
        self._kept: list[tuple[Any, Callable[..., Any], Callable[[Any, Any], None], dict[str, Any]]] = []
        self._running = False
        self._closed = False
        self._done: threading.Event | None = None
        self._slots: list[tuple[str, Callable[..., Any]]] = []

    @property
    def busy(self) -> bool:
        """Whether a job is running or waiting."""
        return self._running or self._pending is not None or bool(self._kept)

    def request(
        self,
        key: Any,
        fn: Callable[..., Any],
        on_returned: Callable[[Any, Any], None],
        *,
        keep: bool = False,
        **kwargs: Any,
    ) -> None:
        """Run ``fn(**kwargs)`` as soon as the running job (if any) is done; drop older waiting requests.

        A request with ``keep`` (one the user asked for, e.g. a copy) is never dropped: such
        requests run in order, before the latest of the others.
        """
        if self._closed:
            return
        if keep:
            self._kept.append((key, fn, on_returned, kwargs))
        else:
            self._pending = (key, fn, on_returned, kwargs)
        if not self._running:
            self._launch()

    def shutdown(self, *_: Any) -> None:
        """Drop waiting requests and the running job's result (the GUI is going away)."""
        self._closed = True
        self._pending = None
        self._kept.clear()
        if self._running:
            _wait_for(self._done, self.desc)

    def _launch(self) -> None:
        if (self._pending is None and not self._kept) or self._closed:
            return
        if self._kept:
            key, fn, on_returned, kwargs = self._kept.pop(0)
        else:
            key, fn, on_returned, kwargs = self._pending  # type: ignore[misc]
            self._pending = None

        def returned(result: Any) -> None:
            if not self._closed:
                on_returned(key, result)

        def errored(exc: BaseException) -> None:
            if self._closed:
                return
            if isinstance(exc, XraysegError):
                show_error(f"{self.desc}: {exc}")
            else:
                raise exc

        done = self._done = threading.Event()
        box = [(fn, kwargs)]  # the job takes them out: the worker (which napari keeps) does not hold them

        def job() -> Any:
            try:
                f, kw = box.pop()
                return f(**kw)
            finally:
                done.set()

        worker = create_worker(job, _ignore_errors=True)
        self._slots = _connect(worker, returned=returned, errored=errored, finished=self._finished)
        self.job = worker
        self._running = True
        worker.start()

    def _finished(self) -> None:
        _let_go(self.job, self._slots)
        self._slots = []
        self._running = False
        self._launch()
