"""Atomic, locked access to the uniform HDF5 layout.

How a file is kept safe
-----------------------
A processed file ``scan.h5`` is small: it holds every group of the layout (``raw/I0``, ``fit/...``,
``norm/...``) *except* the bulky raw spectra. Those live once, written by the converter, in a bulk
file inside the folder ``scan.h5.d/`` and are reached from ``raw/channelXX/spectra`` through an HDF5
external link with a relative path, so ``h5py.File("scan.h5")["raw/channel00/spectra"]`` reads them
like any other dataset (HDF5 looks for the linked file next to the file holding the link).

Each processing step is a :func:`transaction`: it takes an exclusive lock (``scan.h5.d/.lock``),
writes a complete new ``scan.h5`` under a temporary name (a copy of the old one without the groups
it replaces, plus its new groups), flushes and fsyncs it, and swaps it in with ``os.replace``, which
is atomic on POSIX file systems. A crash, a full disk or Ctrl-C at any moment therefore leaves either
the old complete file or the new complete one, and the raw spectra are never rewritten.
Files written by the original xrf_proc (spectra inline, no schema attribute) are read as they are;
writing to them copies their spectra into the new file once, which is slower but equally safe.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from .._version import __version__
from ..errors import FileBusyError, InputError, LayoutError, WriteError
from .naming import BULK_SUFFIX, bulk_dir  # noqa: F401 (re-exported)
from .atomic_io import IN_MEMORY_MAX_BYTES, _fsync_path, _GuardedFile, _write_failure, _write_image  # noqa: F401
from .checks import _check_links, check_declared_sizes, check_links, check_objects, open_hdf5  # noqa: F401
from .filters import GZIP  # noqa: F401 (re-exported)
from .locking import _pid_alive, file_lock  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# GZIP (from filters.py): compression of every array, as in the original layout (readable by any
# HDF5 installation); the raw spectra may use another one (store/filters.py)


# --------------------------------------------------------------------------- small helpers
def encode_names(names: Sequence[str]) -> np.ndarray:
    """Line names as the layout stores them: an array of utf-8 encoded byte strings."""
    enc = [str(n).encode("utf8") for n in names]
    width = max([len(e) for e in enc] + [1])
    return np.array(enc, dtype=f"S{width}")


def decode_names(values: Any) -> list[str]:
    """Inverse of :func:`encode_names`; also accepts str arrays and scalars.

    Raises
    ------
    InputError
        When a name is not utf-8 text.
    """
    arr = np.atleast_1d(values)
    out = []
    for v in arr:
        if isinstance(v, bytes):
            try:
                v = v.decode("utf8")
            except UnicodeDecodeError:
                raise InputError(f"line names must be utf-8 text; {v!r} is not") from None
        out.append(str(v))
    return out


def write_array(group: h5py.Group, name: str, data: Any, **kwargs: Any) -> h5py.Dataset:
    """Write ``data`` into ``group[name]``, gzip-4 compressed when it is an array of any size.

    Strings and sequences of strings are written as utf-8 bytes, scalars as scalars.
    """
    if name in group:
        del group[name]
    if isinstance(data, str):
        return group.create_dataset(name, data=data.encode("utf8"))
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, str) for d in data):
        return group.create_dataset(name, data=encode_names(data))
    arr = np.asarray(data)
    if arr.ndim == 0 or arr.size < 2:
        return group.create_dataset(name, data=arr, **kwargs)
    opts = dict(GZIP)
    opts.update(kwargs)
    return group.create_dataset(name, data=arr, **opts)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"<array {value.shape} {value.dtype}>"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def stamp_provenance(obj: h5py.Group | h5py.Dataset, step: str, params: Mapping[str, Any] | None = None,
                     inputs: Sequence[str] = ()) -> None:
    """Attach the provenance attributes every written group carries."""
    obj.attrs["xrfproc_version"] = __version__
    obj.attrs["step"] = step
    obj.attrs["parameters"] = json.dumps(_jsonable(dict(params or {})), sort_keys=True)
    obj.attrs["inputs"] = json.dumps([str(i) for i in inputs])
    obj.attrs["timestamp"] = now_iso()


def read_provenance(obj: h5py.Group | h5py.Dataset) -> dict[str, Any] | None:
    """The provenance of a group, or None for groups written by other programs."""
    if "step" not in obj.attrs:
        return None
    out: dict[str, Any] = {k: obj.attrs[k] for k in ("xrfproc_version", "step", "timestamp") if k in obj.attrs}
    out = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in out.items()}
    for key in ("parameters", "inputs"):
        try:
            out[key] = json.loads(obj.attrs.get(key, "null"))
        except (TypeError, ValueError):
            out[key] = None
    return out


# --------------------------------------------------------------------------- reading
@contextlib.contextmanager
def open_read(path: str | Path) -> Iterator[h5py.File]:
    """Open a layout file read-only, with errors that name the file.

    The file is checked first: external links and virtual datasets must stay inside the file's
    folder (:func:`check_links`), and the arrays of ``raw/`` must not declare absurd sizes
    (:func:`check_declared_sizes`).

    Raises
    ------
    InputError
        When the file is missing, is not a readable HDF5 file, links outside its folder or
        declares arrays too large to be real.
    """
    path = Path(path)
    f = open_hdf5(path)
    try:
        try:
            _check_links(f, path)
            check_declared_sizes(f, path)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise InputError(f"corrupt HDF5 file ({exc})", path=path) from None
        try:
            yield f
        except (OSError, RuntimeError) as exc:  # HDF5 meeting corrupt or truncated data while reading
            if isinstance(exc, OSError) and exc.errno is not None and "synchronously" not in str(exc):
                raise  # an operating-system error of the caller's own work (not HDF5 reading this file)
            raise InputError(f"corrupt or truncated HDF5 data ({exc})", path=path) from None
        except KeyError as exc:
            if "Unable to" not in str(exc):  # h5py's KeyErrors for damaged objects; others are bugs
                raise
            raise InputError(f"corrupt HDF5 object ({exc.args[0] if exc.args else exc})", path=path) from None
    finally:
        f.close()


def require(f: h5py.File | h5py.Group, key: str, what: str = "dataset") -> Any:
    """``f[key]``, or a LayoutError naming the file and the missing path."""
    try:
        if key in f:
            return f[key]
    except (KeyError, OSError, RuntimeError):
        pass
    parent, _, name = key.rpartition("/")
    try:
        link = (f[parent] if parent else f).get(name, getlink=True)
    except (KeyError, OSError, RuntimeError):
        link = None
    if isinstance(link, h5py.ExternalLink):
        raise LayoutError(f"{what} '{key}' is stored in {link.filename!r}, which is missing or unreadable "
                          "(truncated or moved without the file)", path=f.file.filename, dataset=key)
    raise LayoutError(f"missing {what} '{key}'", path=f.file.filename, dataset=key)


def channels(f: h5py.File | h5py.Group, group: str = "raw") -> list[str]:
    """Sorted detector channel names (``channel00``, ...) under ``group``."""
    g = require(f, group, "group")
    return sorted(k for k in g if k.startswith("channel"))


# --------------------------------------------------------------------------- copying
def _copy_except(src: h5py.Group, dst: h5py.Group, exclude: set[str], prefix: str = "") -> None:
    """Copy every item of ``src`` into ``dst`` except the paths in ``exclude``.

    Links (external or soft) are recreated as links, never expanded, so the raw spectra stay where
    they are. HDF5 failing to read an object of ``src`` (a corrupt file) is an InputError naming the
    file and the object; a failure to write (full disk) propagates as it is.
    """
    where = prefix.rstrip("/") or "/"
    try:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        names = list(src)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        _copy_failure(exc, src, where)
    for name in names:
        full = f"{prefix}{name}"
        if full in exclude:
            continue
        try:
            link = src.get(name, getlink=True)
            if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                dst[name] = link
                continue
            if any(e.startswith(full + "/") for e in exclude):
                sub, target = src[name], dst.create_group(name)
            else:
                src.copy(name, dst, name=name)
                continue
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            _copy_failure(exc, src, full)
        _copy_except(sub, target, exclude, full + "/")


def _copy_failure(exc: BaseException, src: h5py.Group, where: str) -> None:
    """Raise ``exc`` again when it is a failure to write, else an InputError naming the corrupt object."""
    if _write_failure(exc) is not None:
        raise exc
    raise InputError(f"cannot copy the existing data (corrupt HDF5 object: {exc})", path=src.file.filename,
                     dataset=where) from None


# --------------------------------------------------------------------------- transactions
class Transaction:
    """A step's write to a layout file; see :func:`transaction`.

    Attributes
    ----------
    file : h5py.File
        The new file being written (already holding everything the step does not replace).
    path : Path
        The file that will be replaced on success.
    """

    def __init__(self, path: Path, file: h5py.File, step: str, params: Mapping[str, Any],
                 inputs: Sequence[str], replace: Sequence[str]):
        self.path, self.file, self.step = path, file, step
        self.params, self.inputs, self.replace = dict(params), list(inputs), list(replace)
        self.new_bulk: list[Path] = []
        self.guards: list[_GuardedFile] = []

    def group(self, name: str) -> h5py.Group:
        """Create (empty) the group ``name``, one of the paths this transaction replaces."""
        if not any(name == r or name.startswith(r + "/") for r in self.replace):
            raise ValueError(f"group {name!r} is not among the replaced paths {self.replace}")
        if name in self.file:
            del self.file[name]
        return self.file.create_group(name)

    def new_bulk_file(self, tag: str) -> tuple[h5py.File, str]:
        """Open a new bulk file in ``<path>.d/``; returns it and its name relative to ``path``'s folder.

        The bulk file is deleted again when the transaction fails.
        """
        name = f"{tag}-{secrets.token_hex(4)}.h5"
        rel = f"{bulk_dir(self.path).name}/{name}"
        full = bulk_dir(self.path) / name
        self.new_bulk.append(full)
        guard = _GuardedFile(full)
        self.guards.append(guard)
        return h5py.File(guard, "w"), rel

    def maps(self, tag: str, inline_limit: int) -> "BulkMaps":
        """Where large result maps go: see :class:`BulkMaps` (use as a context manager)."""
        return BulkMaps(self, tag, inline_limit)

    def finish_bulk(self) -> None:
        """Sync the bulk files written; raise the first write error HDF5 met in them."""
        for guard in self.guards:
            guard.close()
        for guard in self.guards:
            if guard.error is not None:
                raise guard.error


class BulkMaps:
    """Result maps of a step: written inline when small, else into one bulk file ``<file>.d/<tag>-*.h5``
    of the transaction, linked from the group (external links: read like any dataset).

    Use :meth:`place` per group, inside ``with tx.maps(tag, inline_limit) as maps:``.
    """

    def __init__(self, tx: "Transaction", tag: str, inline_limit: int):
        self.tx, self.tag, self.inline_limit = tx, tag, int(inline_limit)
        self.file: h5py.File | None = None
        self.rel = ""

    def place(self, group: h5py.Group, name: str, nbytes: int, keys: Sequence[str],
              write: Callable[[h5py.Group], Any]) -> Any:
        """Call ``write(target)`` with ``group`` itself (``nbytes <= inline_limit``) or with group ``/name``
        of the bulk file, then link ``group[key]`` for each of ``keys`` written there; return what
        ``write`` returns."""
        if nbytes <= self.inline_limit:
            return write(group)
        if self.file is None:
            self.file, self.rel = self.tx.new_bulk_file(self.tag)
        result = write(self.file.create_group(name))
        for key in keys:
            group[key] = h5py.ExternalLink(self.rel, f"/{name}/{key}")
        return result

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> "BulkMaps":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def transaction(path: str | Path, step: str, replace: Sequence[str], params: Mapping[str, Any] | None = None,
                inputs: Sequence[str] = (), wait: float = 0.0, create: bool = False) -> Iterator[Transaction]:
    """Replace groups of a layout file atomically.

    Parameters
    ----------
    path : str or Path
        The layout file. It must exist unless ``create``.
    step : str
        Name of the processing step (recorded in the provenance).
    replace : sequence of str
        HDF5 paths the step writes (e.g. ``["fit"]`` or ``["detlim/nist613"]``); whatever the file
        holds there is dropped and everything else is kept.
    params, inputs
        Recorded as provenance on every replaced path that the step writes.
    wait : float
        Seconds to wait for another writer (default: refuse at once).

    Raises
    ------
    FileBusyError
        Another process is writing the file.
    WriteError
        The new file could not be written (disk full, read-only folder); the old one is untouched
        and the bulk files this transaction started are removed. Also for ``path`` a symbolic link
        (writing would replace the link, not its target).
    InputError
        The existing file is corrupt: the metadata of every object is read first
        (:func:`~xrfproc.store.checks.check_objects`), and an object HDF5 cannot copy is named.
    """
    path = Path(path)
    if path.exists() == create and not create:
        raise InputError("file not found", path=path)
    params = dict(params or {})
    with file_lock(path, step, wait):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
        in_memory = not path.exists() or path.stat().st_size <= IN_MEMORY_MAX_BYTES
        tx: Transaction | None = None
        try:
            # claim the temporary name first: a read-only folder is refused before any work
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            if in_memory:
                newf = h5py.File(tmp, "w", driver="core", backing_store=False, libver=("earliest", "latest"))
            else:
                newf = h5py.File(tmp, "w", libver=("earliest", "latest"))
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise WriteError(f"cannot write next to the file ({exc.strerror or exc})", path=path) from None
        ok = False
        try:
            if path.exists():
                try:
                    old = h5py.File(path, "r")
                except (OSError, RuntimeError, ValueError) as exc:
                    raise InputError(f"cannot read the existing file ({exc})", path=path) from None
                with old:
                    check_objects(old, path)  # damaged metadata: our error here, not a crash inside HDF5's copy
                    _copy_except(old, newf, set(replace))
            tx = Transaction(path, newf, step, params, inputs, replace)
            yield tx
            tx.finish_bulk()
            for rep in replace:
                if rep in newf:
                    stamp_provenance(newf[rep], step, params, inputs)
            newf.attrs["xrfproc_schema_version"] = SCHEMA_VERSION
            newf.attrs["xrfproc_version"] = __version__
            newf.attrs["last_step"] = step
            if in_memory:
                newf.flush()
                image = newf.id.get_file_image()
                newf.close()
                _write_image(image, tmp)
                del image
            else:
                newf.close()
                _fsync_path(tmp)
            os.replace(tmp, path)
            _fsync_path(path.parent)
            ok = True
        except (OSError, RuntimeError) as exc:
            reason = _write_failure(exc)
            if reason is not None:
                raise WriteError(f"could not write the {step} results ({reason}); the file is unchanged",
                                 path=path) from None
            raise
        finally:
            if not ok:
                with contextlib.suppress(Exception):
                    newf.close()
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                for guard in tx.guards if tx is not None else ():
                    with contextlib.suppress(Exception):
                        guard.close()
                for bulk in tx.new_bulk if tx is not None else ():
                    with contextlib.suppress(OSError):
                        bulk.unlink()
        collect_bulk_garbage(path)


def _external_targets(f: h5py.File) -> set[str]:
    found: set[str] = set()

    def visit(group: h5py.Group) -> None:
        for name in group:
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                found.add(link.filename)
            elif isinstance(link, h5py.HardLink) and isinstance(group[name], h5py.Group):
                visit(group[name])

    visit(f)
    return found


def collect_bulk_garbage(path: str | Path) -> list[Path]:
    """Delete bulk files of ``path`` that no link refers to any more (left by replaced data or a crash).

    Call only while holding the file's lock (transactions do).
    """
    path = Path(path)
    folder = bulk_dir(path)
    if not folder.is_dir() or not path.exists():
        return []
    with h5py.File(path, "r") as f:
        used = {Path(t).name for t in _external_targets(f)}
    removed = []
    for item in folder.glob("*.h5"):
        if item.name not in used:
            with contextlib.suppress(OSError):
                item.unlink()
                removed.append(item)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(stale.name.split(".tmp-")[1].split("-")[0])
            if not _pid_alive(pid):
                stale.unlink()
                removed.append(stale)
    return removed
