"""Atomic file writes shared by the data cache, checkpoints and the notebook runner."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _temp_beside(dest: Path) -> Path:
    """An empty hidden ``.part`` file in ``dest``'s folder (mode 0644), for writing before the rename."""
    if dest.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{dest} is a folder; expected a file path to write to", str(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    os.chmod(tmp, 0o644)
    return Path(tmp)


def _explain_disk_full(err: OSError, dests: list[Path]) -> OSError:
    """The same error with a message that says what happened to the files (nothing) and what to do."""
    names = ", ".join(str(d) for d in dests)
    return OSError(err.errno, f"the disk is full (or over quota) while writing {names}: nothing was changed, "
                              "any previous version is intact. Free some space and try again")


def atomic_write_all(writes: dict[Path, Callable[[Any], Any]]) -> list[Path]:
    """Write every file through a temporary file beside it, then rename them all; on a failure, change nothing.

    ``writes`` maps each destination to ``write(binary_file)``. All temporary files are complete before
    the first rename, so the renames (cheap, in dict order) are all that can be interrupted.
    """
    dests = [Path(d) for d in writes]
    temps: list[Path] = []
    try:
        for dest, write in zip(dests, writes.values()):
            temps.append(_temp_beside(dest))
            with open(temps[-1], "wb") as f:
                write(f)
        for tmp, dest in zip(temps, dests):
            os.replace(tmp, dest)
    except OSError as err:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        if err.errno in _DISK_FULL:
            raise _explain_disk_full(err, dests) from err
        raise
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    return dests


def atomic_write(dest: str | Path, write: Callable[[Any], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``dest``, then rename it onto ``dest``."""
    return atomic_write_all({Path(dest): write})[0]
