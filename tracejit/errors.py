"""Exceptions users see.  Each message says what was wrong and what to do instead."""
from __future__ import annotations

import os
import sys
import traceback


class TracejitError(Exception):
    """Base class of tracejit's own errors."""


class ConcretizationError(TracejitError):
    """A traced value was needed as a concrete Python value while tracing under ``jit``."""


class UnsupportedUnderJitError(TracejitError, NotImplementedError):
    """An operation that has no compiled form was used inside a jitted function.

    The message always names the user's line (added here when the raiser did not)."""

    def __init__(self, message: str = "") -> None:
        if "\n  at " not in message and " at " + os.sep not in message:
            message = f"{message}\n  at {user_frame()}"
        super().__init__(message)


class InternalCompilerError(TracejitError):
    """The compiler failed on a program it accepted: a bug in tracejit, never in the user's code."""


class CacheCorruptionError(TracejitError):
    """An on-disk artifact failed its integrity check."""


def user_frame() -> str:
    """``file:line (source)`` of the innermost stack frame outside tracejit's own packages."""
    for frame in reversed(traceback.extract_stack(sys._getframe(1))):
        if not os.path.abspath(frame.filename).startswith(_OWN_DIRS):
            return f"{frame.filename}:{frame.lineno}: {frame.line}"
    return "<unknown location>"


_OWN_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), pkg) + os.sep
    for pkg in ("tracejit", "codegen", "runtime")
)
