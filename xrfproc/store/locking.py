"""The exclusive write lock of a layout file (``<file>.d/.lock``, an ``flock``)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from ..errors import FileBusyError, WriteError
from .naming import bulk_dir


def _now_iso() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def file_lock(path: str | Path, step: str = "write", wait: float = 0.0) -> Iterator[None]:
    """Hold the exclusive write lock of ``path`` (``<path>.d/.lock``, an ``flock``).

    Parameters
    ----------
    wait : float
        Seconds to wait for another writer to finish; 0 refuses at once.

    Raises
    ------
    FileBusyError
        Naming the process holding the lock and its step.
    """
    path = Path(path)
    folder = bulk_dir(path)
    try:
        folder.mkdir(exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WriteError(f"cannot create the lock file in {folder} ({exc.strerror})", path=path) from None
    deadline = time.monotonic() + wait
    held = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                    raise FileBusyError(f"file is being written by {holder}; try again when it has finished",
                                        path=path) from None
                time.sleep(0.05)
        with contextlib.suppress(OSError):  # the holder's name is a courtesy: a full disk must not stop the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} (step {step}, since {_now_iso()})".encode(), 0)
        yield
    finally:
        if held:  # a refused writer must not erase the holder's name
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
