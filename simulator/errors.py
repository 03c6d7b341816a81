"""Errors that reach the user as one line, never as a traceback.

Every message names the field at fault and what is allowed, for example::

    plan.ep: 48 does not divide model.n_routed_experts=256; allowed: a divisor of 256

The CLI prints ``str(error)`` on stderr and exits with code 2.
"""

from __future__ import annotations

import os


class GpuhoursError(ValueError):
    """Base class of user-facing input errors (exit code 2)."""


class ConfigError(GpuhoursError):
    """A scenario, preset, override or plan that cannot be used."""

    def __init__(self, field: str, problem: str, allowed: str | None = None):
        self.field = field
        self.problem = problem
        self.allowed = allowed
        msg = f"{field}: {problem}"
        if allowed:
            msg += f"; allowed: {allowed}"
        super().__init__(msg)


def special_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists but is neither a regular file nor a directory (a FIFO, a device): opening
    one to read an input file could block forever, so readers refuse it first."""
    return os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path)


def unreadable(e: BaseException) -> str:
    """The first clause of a parser's ValueError or RecursionError, for a one-line message: an integer
    past Python's digit limit ("Exceeds the limit (4300 digits) ...; use sys.set_int_max_str_digits()"),
    or nesting past the recursion limit."""
    return str(e).split(";")[0] or type(e).__name__
