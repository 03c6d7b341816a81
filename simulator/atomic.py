"""Output files written whole or not at all.

Every file the tool writes (search results, traces, calibration profiles) goes
to a temporary file in the destination's directory and is renamed over the
destination only once complete, so a reader, or a run that fails half-way,
never leaves half a file, and an existing file survives a failed run.
:func:`check_writable` lets a command refuse a bad output path before it
spends minutes computing what it would write there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO

from .errors import ConfigError


def check_writable(path: str | os.PathLike[str], field: str) -> str:
    """Raise ConfigError naming ``field`` unless ``path`` can be created or replaced."""
    p = os.fspath(path)
    if not p:
        raise ConfigError(field, "empty path", "a file path")
    if os.path.isdir(p):
        raise ConfigError(field, f"{p} is a directory", "a file path")
    d = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(d):
        raise ConfigError(field, f"directory {d} does not exist", "a path in an existing directory")
    try:  # a real probe: permission bits say nothing about read-only or special file systems
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        raise ConfigError(field, f"cannot write in {d} ({e.strerror})", "a path in a writable directory") from None
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], fill: Callable[[IO], None], binary: bool = False,
                 field: str = "output") -> None:
    """Create ``path`` through a temporary sibling that ``fill`` writes; rename it in place when done.

    The file gets the usual permissions (0666 less the umask; ``mkstemp`` alone would leave 0600)."""
    p = check_writable(path, field)
    d = os.path.dirname(os.path.abspath(p))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(p)}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
