"""Progress reporting shared by every long step.

A step takes ``progress: ProgressCallback | None`` and calls ``progress(done, total, message)``
as work completes (``done`` and ``total`` in the step's own units: pixels, blocks, channels).
Front-ends pass their own callback: the CLI a terminal bar (:func:`terminal_bar`), the MCP server
progress notifications. ``None`` means nobody listens.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Protocol


class ProgressCallback(Protocol):
    def __call__(self, done: float, total: float, message: str = "") -> None: ...


def report(progress: ProgressCallback | None, done: float, total: float, message: str = "") -> None:
    """Call ``progress`` if there is one (steps use this instead of testing for None)."""
    if progress is not None:
        progress(done, total, message)


@contextlib.contextmanager
def terminal_bar(description: str, unit: str = "it") -> Iterator[ProgressCallback]:
    """A tqdm bar on stderr driven through the progress protocol (stdout stays clean)."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done: float, total: float, message: str = "") -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


ProgressFn = Callable[[float, float, str], None]
