"""Low-level writing for atomic replacement: files that report a full disk cleanly, fsync."""
from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _GuardedFile(io.RawIOBase):
    """The file object under a bulk file that HDF5 writes through (h5py's ``fileobj`` driver).

    HDF5 cannot recover from a failed write (a full disk): its cache stays dirty and the library
    may crash when it later retries. This file records the first error and then accepts (and
    drops) every further write, so HDF5 closes normally; :meth:`Transaction.finish_bulk` then
    raises the recorded error and the transaction removes the file.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.fh = open(path, "w+b", buffering=0)
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.fh.seek(pos, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def readinto(self, buf: Any) -> int:
        return self.fh.readinto(buf)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self.error is None:
            try:
                while view:
                    n = self.fh.write(view)
                    view = view[n:]
            except OSError as exc:
                self.error = exc
        if self.error is not None:  # keep HDF5's idea of the file position consistent
            self.fh.seek(len(view), os.SEEK_CUR)
        return size

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.fh.truncate(size)
            except OSError as exc:
                self.error = exc
        return self.fh.tell() if size is None else size

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.error is None:
                os.fsync(self.fh.fileno())
        except OSError as exc:
            self.error = exc
        finally:
            self.fh.close()
            super().close()


#: a layout file up to this size is rebuilt in memory and written with one plain write (a full disk is
#: then a clean ENOSPC, never a failure inside HDF5's cache flush); bigger ones (original-layout files
#: with the spectra inline) are rebuilt on disk
IN_MEMORY_MAX_BYTES = 512 * 1024 * 1024
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def _write_failure(exc: BaseException) -> str | None:
    """The reason when ``exc`` is a failure to write (full disk, read-only, no permission), else None.

    HDF5 reports its write errors as OSError or RuntimeError with the errno only in the text.
    """
    code = getattr(exc, "errno", None)
    if code in _WRITE_ERRNOS:
        return os.strerror(code)
    text = str(exc)
    for code in _WRITE_ERRNOS:
        if f"errno = {code}," in text or os.strerror(code) in text:
            return os.strerror(code)
    return None


def _write_image(image: bytes, tmp: Path) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(image)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
