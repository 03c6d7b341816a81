"""Errors that reach the user as one line, never as a traceback.

Every message names the field at fault and what is allowed, for example::

    plan.ep: 48 does not divide model.n_routed_experts=256; allowed: a divisor of 256

The CLI prints ``str(error)`` on stderr and exits with code 2.
"""

from __future__ import annotations


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
