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


_OWN_CODE: dict[object, bool] = {}     # code object -> whether it is tracejit's own
_LINES: dict[tuple[object, int], str] = {}     # (code object, bytecode offset) -> "file.py:line"


def source_line(depth: int = 1) -> str:
    """``file.py:line`` (the file's base name) of the innermost user frame, or ``""``.

    Called for every op recorded while tracing, so it is cheap: a short walk up the stack with
    one dictionary lookup per frame (whether a code object is tracejit's own is computed once),
    and the text made once per call site.
    """
    f = sys._getframe(depth)
    own = _OWN_CODE
    while f is not None:
        code = f.f_code
        mine = own.get(code)
        if mine is None:
            mine = own[code] = os.path.abspath(code.co_filename).startswith(_OWN_DIRS)
        if not mine:
            key = (code, f.f_lasti)
            line = _LINES.get(key)
            if line is None:
                if len(_LINES) > 1 << 16:
                    _LINES.clear()
                line = _LINES[key] = f"{os.path.basename(code.co_filename)}:{f.f_lineno}"
            return line
        f = f.f_back
    return ""
