"""Choosing where block-wise work runs: in this process, local threads or processes, or a Dask cluster.

A step splits its work into independent tasks (a block of pixels each: the task reads its block
from the HDF5 file itself, so only a path and a slice travel) and hands them to a :class:`Runner`
from :func:`get_runner`. Results come back in completion order (for progress) and are written by
the calling process alone.

Scheduler names
---------------
``None``
    ``$XRFPROC_SCHEDULER`` if set, else the step's local default.
``"sync"``
    Every task in this process, one after the other (debugging, tests, and the fast fits whose
    kernels already use every core).
``"threads"`` / ``"processes"``
    A local pool of ``n_workers`` threads or (forked) processes.
``"tcp://host:port"`` (or any ``scheme://`` address), or a ``distributed.Client``
    A Dask distributed cluster (``dask scheduler`` + ``dask worker``, or dask-jobqueue on
    SLURM/PBS). Workers must see the file under the same path (shared file system). Tasks of a
    worker that dies are rerun elsewhere by Dask.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import InputError

log = logging.getLogger(__name__)

ENV_VAR = "XRFPROC_SCHEDULER"
LOCAL = ("sync", "threads", "processes")


def resolve(scheduler: Any = None, default: str = "sync") -> Any:
    """The scheduler to use: ``scheduler``, else ``$XRFPROC_SCHEDULER``, else ``default``.

    Raises
    ------
    InputError
        For a name that is neither a local scheduler nor an address.
    """
    if scheduler is None:
        scheduler = os.environ.get(ENV_VAR, "").strip() or default
    if isinstance(scheduler, str):
        if scheduler in LOCAL or "://" in scheduler:
            return scheduler
        raise InputError(f"scheduler {scheduler!r} must be one of {', '.join(LOCAL)} or a Dask scheduler address "
                         "such as tcp://host:8786")
    if hasattr(scheduler, "submit") and hasattr(scheduler, "scheduler_info"):
        return scheduler  # a distributed.Client
    raise InputError(f"scheduler must be a name, an address or a distributed.Client, got {type(scheduler).__name__}")


@dataclass
class Runner:
    """Runs tasks somewhere and yields their results as they complete.

    Attributes
    ----------
    kind : str
        ``"sync"``, ``"threads"``, ``"processes"`` or ``"distributed"``.
    address : str
        Where it runs (``"local"`` or the scheduler address), for provenance.
    workers : int
        Number of workers (threads for ``threads``; worker threads over the cluster for distributed).
    """

    kind: str
    address: str
    workers: int
    _pool: Any = None
    _client: Any = None
    _own_client: bool = False
    _log: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """Where the work ran, for the provenance of the written group."""
        return {"scheduler": self.kind if self.kind != "distributed" else self.address, "workers": self.workers}

    def map_unordered(self, func: Callable[..., Any], argsets: Iterable[Sequence[Any]],
                      max_inflight: int | None = None) -> Iterator[tuple[int, Any]]:
        """Call ``func(*args)`` for every ``args``; yield ``(index, result)`` in completion order.

        At most ``max_inflight`` tasks (default ``2 * workers + 2``) are pending at a time, so the
        results waiting for the writer stay bounded whatever the number of tasks. An exception in
        a task is raised here (after cancelling what is pending).
        """
        items = iter(enumerate(argsets))
        limit = max(1, int(max_inflight or 2 * self.workers + 2))
        if self.kind == "sync":
            for i, args in items:
                yield i, func(*args)
            return
        if self.kind == "distributed":
            yield from self._distributed(func, items, limit)
            return
        pending: dict[cf.Future, int] = {}
        try:
            while True:
                while len(pending) < limit:
                    nxt = next(items, None)
                    if nxt is None:
                        break
                    pending[self._pool.submit(func, *nxt[1])] = nxt[0]
                if not pending:
                    return
                done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def _distributed(self, func: Callable[..., Any], items: Iterator[tuple[int, Sequence[Any]]],
                     limit: int) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        client = self._client
        index: dict[str, int] = {}

        def submit(i: int, args: Sequence[Any]) -> Any:
            # pure=False: a task redone after a resume or a retry is a new task, never a cached one
            fut = client.submit(func, *args, pure=False)
            index[fut.key] = i
            return fut

        first = []
        for _ in range(limit):
            nxt = next(items, None)
            if nxt is None:
                break
            first.append(submit(*nxt))
        if not first:
            return
        queue = as_completed(first, loop=client.loop)
        try:
            for fut in queue:
                i = index.pop(fut.key)
                result = fut.result()
                fut.release()
                nxt = next(items, None)
                if nxt is not None:
                    queue.add(submit(*nxt))
                yield i, result
        finally:
            for fut in list(queue.futures):
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None and self._own_client:
            self._client.close()
            self._client = None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _openmp_running() -> bool:
    """Whether numba's parallel kernels already run on GNU OpenMP in this process (which a forked
    child cannot use: it is terminated with "fork() called from a process already using GNU OpenMP")."""
    numba = sys.modules.get("numba")
    if numba is None:
        return False
    try:
        return numba.threading_layer() == "omp"
    except ValueError:  # no parallel kernel has run yet
        return False


def start_method() -> str:
    """How local worker processes start: ``fork`` where available (workers inherit the loaded
    modules; no ``if __name__ == "__main__"`` guard needed in user scripts), unless this process
    already runs OpenMP threads (an engine fit ran here): then ``forkserver`` (or ``spawn``)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and not _openmp_running():
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _mp_context() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context(start_method())


def get_runner(scheduler: Any = None, n_workers: int | None = None, default: str = "sync",
               timeout: float = 30.0) -> Runner:
    """A :class:`Runner` for ``scheduler`` (see the module docstring); close it (or use ``with``).

    Parameters
    ----------
    scheduler : None, str or distributed.Client
        See :func:`resolve`.
    n_workers : int, optional
        Local pool size (default: all cores). Ignored for a cluster.
    default : str
        The local scheduler used when neither ``scheduler`` nor ``$XRFPROC_SCHEDULER`` is given.
    timeout : float
        Seconds to wait for a cluster's scheduler to answer.

    Raises
    ------
    InputError
        Unknown scheduler name, or a cluster that cannot be reached (the message names the address).
    """
    sched = resolve(scheduler, default)
    workers = max(1, int(n_workers or os.cpu_count() or 1))
    if sched == "sync":
        return Runner("sync", "local", 1)
    if sched == "threads":
        return Runner("threads", "local", workers, _pool=cf.ThreadPoolExecutor(workers))
    if sched == "processes":
        return Runner("processes", "local", workers,
                      _pool=cf.ProcessPoolExecutor(workers, mp_context=_mp_context()))
    try:
        from distributed import Client
    except ImportError:
        raise InputError(f"scheduler {sched!r} needs the 'distributed' package (pip install distributed)") from None
    own = isinstance(sched, str)
    if own:
        try:
            client = Client(sched, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {sched} ({exc}); start it with 'dask scheduler' "
                             f"and workers with 'dask worker {sched}', or set {ENV_VAR}") from None
    else:
        client = sched
    info = client.scheduler_info()
    nthreads = sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())
    if nthreads == 0:
        log.warning("the Dask cluster at %s has no worker yet; tasks wait for one", info.get("address"))
    return Runner("distributed", str(info.get("address", sched)), max(1, nthreads), _client=client, _own_client=own)


__all__ = ["ENV_VAR", "Runner", "get_runner", "resolve"]
