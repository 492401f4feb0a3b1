"""Exceptions raised by napari-xrayseg.

Every message names the problem, the value seen and the fix, in one line, so the
CLI can print it as is and widgets can show it as a notification.
"""

from __future__ import annotations

__all__ = ["Cancelled", "InputError", "ModelFileError", "OutputExistsError", "XraysegError"]


class XraysegError(Exception):
    """Base class of every error napari-xrayseg raises on purpose."""


class InputError(XraysegError, ValueError):
    """An argument, array or file given by the user cannot be used."""


class ModelFileError(XraysegError, ValueError):
    """A model file is missing, malformed, or does not match its declared architecture."""


class OutputExistsError(XraysegError, FileExistsError):
    """An output path exists and ``overwrite`` was not asked for."""


class Cancelled(XraysegError):
    """A long job stopped because its :class:`~napari_xrayseg.core.progress.CancelToken` was set.

    Attributes
    ----------
    result : object or None
        What the job had achieved when it stopped, if anything useful (training puts the
        best model so far here); ``None`` otherwise.
    """

    result: object | None = None
