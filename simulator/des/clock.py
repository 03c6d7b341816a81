"""Integer-nanosecond simulation clock.

The discrete-event engine runs SimPy with ``env.now`` counted in whole
nanoseconds. A float clock in seconds is tempting but fragile: when a flow's
remaining bytes shrink to a tiny float, the time to finish it can round to a
zero-length (or sub-ulp) delay, ``env.now`` stops advancing and the network
recomputes rates forever (a livelock). With integers every positive duration is
at least one tick, so time always moves forward.

Use :func:`to_ns` whenever a duration in seconds enters the engine and
:func:`to_s` when reporting.
"""

from __future__ import annotations

import math

NS_PER_S = 1_000_000_000


def to_ns(seconds: float) -> int:
    """Round a duration in seconds to whole nanoseconds.

    Zero maps to 0; any positive duration maps to at least 1 ns so that a
    scheduled event never lands at the current instant by accident.
    """
    if seconds < 0:
        raise ValueError(f"seconds: must be >= 0, got {seconds!r}")
    if seconds == 0:
        return 0
    return max(1, int(round(seconds * NS_PER_S)))


def ceil_ns(seconds: float) -> int:
    """Round a positive duration *up* to whole nanoseconds (at least 1 ns).

    Used where finishing early would be wrong, e.g. a transfer's completion.
    """
    if seconds <= 0:
        return 0
    return max(1, math.ceil(seconds * NS_PER_S))


def to_s(ns: int | float) -> float:
    """Convert nanoseconds back to seconds."""
    return ns / NS_PER_S
