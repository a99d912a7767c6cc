"""The exclusive write lock of a layout file (``<file>.d/.lock``, an ``flock``).

The lock is re-entrant within one thread: a step that holds it for its whole run (its partial
results, :class:`xrfproc.store.blocks.PartialResults`) writes its results with a
:func:`~xrfproc.store.h5store.transaction` that takes it again. Another thread or another process
is refused (:class:`~xrfproc.errors.FileBusyError`). A process forked while the lock is held does
not keep it: the child closes its copy of the descriptor.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from ..errors import FileBusyError, WriteError
from .naming import bulk_dir

log = logging.getLogger(__name__)

#: locks held by this process: (thread id, real path of the lock file) -> [descriptor, depth]
_HELD: dict[tuple[int, str], list[int]] = {}
_HELD_GUARD = threading.Lock()


def _now_iso() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _forget_in_child() -> None:
    """After ``fork``: close the child's copies of the lock descriptors (the parent keeps its locks)."""
    for fd, _depth in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def refuse_link(path: str | Path) -> None:
    """Refuse to write a layout file through a symbolic link.

    Writes replace the file atomically (``os.replace``), which would replace the link itself, not
    the file it points to, and the link's name and the target's name would take different locks.

    Raises
    ------
    WriteError
        When the last component of ``path`` is a symbolic link (also a dangling one).
    """
    path = Path(path)
    if path.is_symlink():
        target = os.readlink(path)
        raise WriteError(f"is a symbolic link to {target!r}; results are written by replacing the file, which "
                         "would replace the link: give the real file's path", path=path)


class LockHandle:
    """One hold of a file's lock; :meth:`release` it (idempotent). See :func:`acquire_lock`."""

    def __init__(self, key: tuple[int, str], path: Path):
        self.key, self.path = key, path
        self.released = False

    def release(self) -> None:
        """Give this hold back; the ``flock`` goes when the outermost hold of the thread is released."""
        if self.released:
            return
        self.released = True
        with _HELD_GUARD:
            entry = _HELD.get(self.key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[self.key]
        fd = entry[0]
        with contextlib.suppress(OSError):  # erase the holder's name, then unlock by closing
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            os.close(fd)


def acquire_lock(path: str | Path, step: str = "write", wait: float = 0.0) -> LockHandle:
    """Take the exclusive write lock of ``path`` (``<path>.d/.lock``); see :func:`file_lock`.

    Returns
    -------
    LockHandle
        Call its ``release()`` when done (or use :func:`file_lock`).

    Raises
    ------
    FileBusyError
        Another process (or another thread of this one) holds the lock; names the holder and its step.
    WriteError
        ``path`` is a symbolic link (:func:`refuse_link`), or the lock file cannot be created.
    """
    path = Path(path)
    refuse_link(path)
    folder = bulk_dir(path)
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create the lock file in {folder} ({exc.strerror})", path=path) from None
    key = (threading.get_ident(), os.path.join(os.path.realpath(folder), ".lock"))
    with _HELD_GUARD:
        entry = _HELD.get(key)
        if entry is not None:  # this thread holds it already (a step's transaction inside its run)
            entry[1] += 1
            return LockHandle(key, path)
    try:
        fd = os.open(key[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise WriteError(f"cannot create the lock file in {folder} ({exc.strerror})", path=path) from None
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                    raise FileBusyError(f"file is being written by {holder}; try again when it has finished",
                                        path=path) from None
                time.sleep(0.05)
    except BaseException:
        os.close(fd)  # a refused writer must not erase the holder's name
        raise
    with contextlib.suppress(OSError):  # the holder's name is a courtesy: a full disk must not stop the lock
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} (step {step}, since {_now_iso()})".encode(), 0)
    with _HELD_GUARD:
        _HELD[key] = [fd, 1]
    return LockHandle(key, path)


@contextlib.contextmanager
def file_lock(path: str | Path, step: str = "write", wait: float = 0.0) -> Iterator[None]:
    """Hold the exclusive write lock of ``path`` (``<path>.d/.lock``, an ``flock``).

    Re-entrant within a thread: a thread that holds the lock already (a step keeping its partial
    results) passes at once.

    Parameters
    ----------
    wait : float
        Seconds to wait for another writer to finish; 0 refuses at once.

    Raises
    ------
    FileBusyError
        Naming the process holding the lock and its step.
    WriteError
        ``path`` is a symbolic link, or the lock file cannot be created.
    """
    handle = acquire_lock(path, step, wait)
    try:
        yield
    finally:
        handle.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
