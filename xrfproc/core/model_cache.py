"""A cache of the fit engine's model inputs, keyed by the fit configuration.

Building the engine's model asks PyMca to configure its fit theory (line tables, escape peaks,
attenuation of every line by the matrix and the filters), which costs 0.2-0.4 s: more than the
engine takes to fit a 100 x 100 map. The result depends only on the configuration, the number
of channels and the weight policy, never on the spectra: PyMca's fast-fit set-up runs with the
linear flag on, so its ``estimate`` fixes groups by their line positions only, and the model
columns are derivatives with respect to linear parameters (checked in ``tests/test_fit_engine.py``
by building with two unrelated spectra). A beamline processes hundreds of maps with one
configuration, and each Dask worker builds the model of the map it works on: both hit the cache.

Two levels:

- in the process, the last :data:`MEMORY_ENTRIES` models (a dict, copied on the way out);
- on disk, one ``.npz`` file per key in ``$XRFPROC_CACHE_DIR`` (default
  ``$XDG_CACHE_HOME/xrfproc/models`` or ``~/.cache/xrfproc/models``), written atomically, never
  unpickled, pruned to the newest :data:`DISK_ENTRIES` files. ``XRFPROC_CACHE_DIR=off`` (or an
  unwritable folder) disables the disk level; a damaged file is ignored and rebuilt.

The key is the SHA-256 of the canonical JSON of the configuration, ``nbins``, the weight policy,
PyMca's version and :data:`FORMAT`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

log = logging.getLogger(__name__)

#: bump when the content of the cached dict changes
FORMAT = 2
MEMORY_ENTRIES = 16
DISK_ENTRIES = 200
_memory: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
#: arrays stored in the npz; everything else goes to the JSON part
_ARRAYS = ("derivatives",)


def _plain(value: Any) -> Any:
    """JSON-able form of a configuration value (numpy arrays and scalars included, in full)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:
        return "nan"  # the key's JSON allows no NaN
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def model_key(config: Mapping[str, Any], nbins: int, weight: int | None, version: str) -> str:
    """The cache key of a model: SHA-256 hex digest of everything the model depends on."""
    doc = {"format": FORMAT, "pymca": version, "nbins": int(nbins), "weight": weight, "config": _plain(config)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf8")).hexdigest()


def cache_dir() -> Path | None:
    """The disk cache folder, or None when disabled (``XRFPROC_CACHE_DIR=off``)."""
    env = os.environ.get("XRFPROC_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "no", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xrfproc" / "models"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = json.loads(str(npz["meta"][()]))
            for key in _ARRAYS:
                out[key] = np.array(npz[key], dtype=np.float64)
        return out
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged or foreign file: rebuild, never fail the fit for a cache
        log.warning("ignoring damaged model cache file %s (%s)", path, exc)
        return None


def _to_json(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else repr(value)


def _save(folder: Path, key: str, value: Mapping[str, Any]) -> None:
    meta = {k: v for k, v in value.items() if k not in _ARRAYS}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(meta, default=_to_json)),
                         **{k: np.asarray(value[k], dtype=np.float64) for k in _ARRAYS})
            os.replace(tmp, folder / f"{key}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _prune(folder)
    except OSError as exc:
        log.info("model cache not written to %s (%s); the model is rebuilt next time", folder, exc)


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[DISK_ENTRIES:]:
        old.unlink(missing_ok=True)


def cached(key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The model inputs for ``key``: from memory, from disk, or ``build()`` (then stored).

    Returns a deep copy: callers may modify it.
    """
    hit = _memory.get(key)
    source = "memory"
    if hit is None:
        folder = cache_dir()
        hit = _load(folder / f"{key}.npz") if folder is not None else None
        source = "disk"
        if hit is None:
            hit = build()
            source = "built"
            if folder is not None:
                _save(folder, key, hit)
        _memory[key] = hit
        while len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)
    else:
        _memory.move_to_end(key)
    log.debug("engine model %s: %s", key[:12], source)
    return copy.deepcopy(hit)


def clear_memory() -> None:
    """Forget the models held in this process (the disk cache stays)."""
    _memory.clear()
