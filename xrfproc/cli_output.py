"""What the ``xrfproc`` command prints: compact summary tables of the steps and the library warnings
gathered while a step ran.

A step's summary (the dict :mod:`xrfproc.api` returns) is shown as one table, a row per fitted line
(channels side by side), under ~30 lines; ``--json`` prints the dict itself. Warnings that libraries
emit during a step (Python ``logging`` records of level WARNING and above, :mod:`warnings`, and
PyMca's ``print("WARNING: ...")``) are held back while the progress bar runs and listed once after
it, grouped by message template and counted; ``-v`` shows them as they come instead.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

#: rows of a summary table before the rest is left to ``--json``
MAX_ROWS = 24
#: distinct warnings listed after a step before the rest is counted
MAX_WARNINGS = 8
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


# ---------------------------------------------------------------------------------------------------
# warnings


@dataclass
class GatheredWarnings:
    """Warnings held back during a step, grouped by template (numbers and quoted names folded).

    Attributes
    ----------
    groups : dict key -> [first message, count, distinct messages]
    """

    groups: "OrderedDict[str, list[Any]]" = field(default_factory=OrderedDict)

    def add(self, key: str, message: str) -> None:
        """Count one warning; ``key`` groups messages that differ only in their numbers or names."""
        message = message.strip()
        if not message:
            return
        entry = self.groups.get(key)
        if entry is None:
            self.groups[key] = [message, 1, {message}]
        else:
            entry[1] += 1
            if len(entry[2]) < 1000:
                entry[2].add(message)

    @property
    def total(self) -> int:
        return sum(e[1] for e in self.groups.values())

    def lines(self, limit: int = MAX_WARNINGS) -> list[str]:
        """The short list printed after the step (empty when there was nothing)."""
        if not self.groups:
            return []
        n, k = self.total, len(self.groups)
        out = [f"{n} warning{'s' if n != 1 else ''} during the step"
               + (f" ({k} kinds)" if k != n else "") + "; -v shows them as they come:"]
        for i, (message, count, distinct) in enumerate(self.groups.values()):
            if i == limit:
                rest = sum(e[1] for e in list(self.groups.values())[limit:])
                out.append(f"  ... and {rest} more of {k - limit} other kinds")
                break
            if count == 1:
                out.append(f"  {message}")
            elif len(distinct) == 1:
                out.append(f"  {message} (x{count})")
            else:
                out.append(f"  {message} (and {count - 1} similar)")
        return out


def _template(name: str, text: str) -> str:
    return name + ":" + _NUMBER.sub("#", re.sub(r"parameter \S+ \S+", "parameter #", text))


class _Collector(logging.Handler):
    def __init__(self, gathered: GatheredWarnings):
        super().__init__(logging.WARNING)
        self.gathered = gathered

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record must not stop the step
            text = str(record.msg)
        name = record.name
        short = name.rsplit(".", 1)[-1] if name.startswith("PyMca5") else name
        template = str(record.msg) if isinstance(record.msg, str) and record.args else text
        self.gathered.add(_template(name, template), f"{short}: {text.splitlines()[0] if text else text}")


@contextlib.contextmanager
def gather_warnings(verbose: bool = False) -> Iterator[GatheredWarnings]:
    """Hold back library warnings while the body runs; yields what was gathered.

    Logging records of WARNING and above (and :mod:`warnings`, through :func:`logging.captureWarnings`)
    are collected instead of shown; text that libraries print to standard output (PyMca's
    ``WARNING: Needed 10 iterations``, also from worker processes) is captured at the file
    descriptor and collected line by line. Errors (ERROR and above) are still shown as they come.
    With ``verbose`` nothing is held back.
    """
    gathered = GatheredWarnings()
    if verbose:
        yield gathered
        return
    root = logging.getLogger()
    collector = _Collector(gathered)
    shown = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in shown]
    for h in shown:
        h.setLevel(max(h.level, logging.ERROR))
    root.addHandler(collector)
    logging.captureWarnings(True)
    buffer = io.StringIO()
    with _capture_fd(1) as captured, contextlib.redirect_stdout(buffer):
        try:
            yield gathered
        finally:
            root.removeHandler(collector)
            logging.captureWarnings(False)
            for h, level in zip(shown, levels):
                h.setLevel(level)
    for text in (buffer.getvalue(), captured.text):
        for line in text.splitlines():
            line = line.strip()
            if line:
                gathered.add(_template("stdout", line), line)


@dataclass
class _Captured:
    text: str = ""


@contextlib.contextmanager
def _capture_fd(fd: int) -> Iterator[_Captured]:
    """What is written to file descriptor ``fd`` (by this process and its children) while the body
    runs; nothing is captured where the descriptor cannot be duplicated."""
    captured = _Captured()
    try:
        saved = os.dup(fd)
    except OSError:
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.dup2(tmp.fileno(), fd)
        try:
            yield captured
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------------
# tables


def fmt(value: Any) -> str:
    """A number in 4 significant digits (``-`` for missing and NaN)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "-"
    return f"{x:.4g}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], max_rows: int = MAX_ROWS) -> list[str]:
    """Aligned text columns (first left, others right), rows past ``max_rows`` counted."""
    cells = [[str(h) for h in header]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows[:max_rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    left = [i == 0 or str(h) == "line" for i, h in enumerate(header)]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if left[i] else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    out = [line(cells[0]), "-" * len(line(cells[0]))] + [line(r) for r in cells[1:]]
    if len(rows) > max_rows:
        out.append(f"... {len(rows) - max_rows} more rows (--json gives them all)")
    return out


def _short(channel: str) -> str:
    return channel.replace("channel", "ch")


def _per_line(channels: Mapping[str, Any], value: Any) -> tuple[list[str], list[list[Any]]]:
    """Rows ``line, value(channel0), value(channel1), ...`` over the union of the channels' lines."""
    order: list[str] = []
    for c in channels.values():
        for name in _lines(c):
            if name not in order:
                order.append(name)
    rows = [[name, *[value(c, name) for c in channels.values()]] for name in order]
    return order, rows


def _lines(c: Any) -> Mapping[str, Any]:
    """A channel's per-line statistics: ``lines`` (fit: ``{min, median, max}``) or ``stats``
    (normalise: ``[min, median, max]``)."""
    if not isinstance(c, Mapping):
        return {}
    return c.get("lines") or c.get("stats") or {}


def _median(c: Any, name: str) -> Any:
    entry = _lines(c).get(name)
    if isinstance(entry, Mapping):
        return entry.get("median")
    if isinstance(entry, (list, tuple)) and len(entry) == 3:
        return entry[1]
    return entry


def _counts(c: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = c.get(k)
        if isinstance(v, (list, tuple)):
            v = len(v)
        if v:
            parts.append(f"{k.replace('_', ' ')} {fmt(v)}")
    return ", ".join(parts)


def _warnings(summary: Mapping[str, Any]) -> list[str]:
    seen: list[str] = []
    for w in list(summary.get("warnings") or []) + [w for c in (summary.get("channels") or {}).values()
                                                    if isinstance(c, Mapping) for w in (c.get("warnings") or [])]:
        if str(w) not in seen:
            seen.append(str(w))
    out = [f"warning: {w}" for w in seen[:5]]
    if len(seen) > 5:
        out.append(f"... {len(seen) - 5} more warnings (--json)")
    return out


def _grid(chans: Mapping[str, Any]) -> list[int] | None:
    """The map's grid from the first channel's image stack shape ``(lines, *grid)``."""
    first = next(iter(chans.values()), {}) if chans else {}
    shape = first.get("shape") if isinstance(first, Mapping) else None
    if not shape:
        return None
    return list(shape[1:]) if len(shape) > 1 else list(shape)


def format_fit(summary: Mapping[str, Any]) -> str:
    """``xrfproc fit``: the median area of each line per channel, then failures and warnings."""
    chans = summary.get("channels") or {}
    shape = _grid(chans)
    head = (f"fit ({summary.get('mode', '?')}) of {summary.get('file', '?')}: {len(chans)} channel(s)"
            + (f", grid {' x '.join(str(s) for s in shape)}" if shape else "")
            + (f", {fmt(summary.get('seconds'))} s" if summary.get("seconds") is not None else ""))
    _, rows = _per_line(chans, _median)
    lines = [head, ""] + table(["line", *[f"median {_short(c)}" for c in chans]], rows)
    for c, s in chans.items():
        if isinstance(s, Mapping):
            extra = _counts(s, ("failed", "invalid", "deadtime_missing"))
            chi2 = s.get("chi2_median")
            if extra or chi2 is not None:
                lines.append(f"{c}: " + ", ".join(x for x in (f"median reduced chi2 {fmt(chi2)}"
                                                              if chi2 is not None else "", extra) if x))
    return "\n".join(lines + _warnings(summary))


def format_normalise(summary: Mapping[str, Any]) -> str:
    """``xrfproc normalise``: the median normalised value of each line per channel."""
    chans = summary.get("channels") or {}
    if not isinstance(chans, Mapping):  # a list of names: the lines are per channel elsewhere
        chans = {c: summary.get(c, {}) for c in chans}
    head = f"normalised {summary.get('file', '')}".rstrip()
    shape = summary.get("shape") or _grid(chans)
    if shape:
        head += f": grid {' x '.join(str(s) for s in shape)}"
    masked = summary.get("masked") if "masked" in summary else summary.get("masked_points")
    if masked:
        head += f", {fmt(masked if not isinstance(masked, (list, dict)) else len(masked))} masked points"
    _, rows = _per_line(chans, _median)
    lines = [head, ""] + table(["line", *[f"median {_short(c)}" for c in chans]], rows)
    return "\n".join(lines + _warnings(summary))


def format_detlim(summary: Mapping[str, Any]) -> str:
    """``xrfproc detlim``: the detection limit (1 s) of each line per channel, several lines side by side
    when there are more than :data:`MAX_ROWS` (a reference glass has some 70); the yields are in ``--json``."""
    chans = summary.get("channels") or {}
    names: list[str] = []
    for c in chans.values():
        for n in (c.get("detection_limits_ppm_1s") or {}) if isinstance(c, Mapping) else ():
            if n not in names:
                names.append(n)
    unit = summary.get("unit") or "ppm"
    per_row = max(1, math.ceil(len(names) / MAX_ROWS))
    nrows = math.ceil(len(names) / per_row) if names else 0
    header: list[str] = []
    for _ in range(min(per_row, max(1, len(names)))):
        header += ["line", *[f"DL {_short(c)}" for c in chans]]
    rows = []
    for r in range(nrows):
        row: list[Any] = []
        for k in range(per_row):
            i = k * nrows + r
            if i < len(names):
                n = names[i]
                row += [n, *[(c.get("detection_limits_ppm_1s") or {}).get(n) for c in chans.values()]]
            elif k < len(header) // (1 + len(chans)):
                row += [""] * (1 + len(chans))
        rows.append(row)
    head = f"detection limits (1 s, {unit}) of {summary.get('file', '?')}"
    if summary.get("cnc"):
        head += f" against {os.path.basename(str(summary['cnc']))}"
    lines = [head, ""] + table(header, rows, max_rows=max(MAX_ROWS, nrows))
    for c, s in chans.items():
        skipped = s.get("skipped") if isinstance(s, Mapping) else None
        if skipped:
            lines.append(f"{c}: no limit for {len(skipped)} line(s) the reference lacks or that are not "
                         f"significant: {', '.join(map(str, skipped[:8]))}{' ...' if len(skipped) > 8 else ''}")
    return "\n".join(lines + _warnings(summary))


def format_quantify(summary: Mapping[str, Any]) -> str:
    """``xrfproc quantify``: the mean concentration of each line per channel."""
    chans = summary.get("channels") or {}
    unit = summary.get("unit") or ""
    names: list[str] = []
    for c in chans.values():
        for n in (c.get("mean") or {}) if isinstance(c, Mapping) else ():
            if n not in names:
                names.append(n)
    rows = [[n, *[(c.get("mean") or {}).get(n) for c in chans.values()]] for n in names]
    lines = [f"quantified {summary.get('file', '?')}" + (f" ({unit})" if unit else ""), ""]
    lines += table(["line", *[f"mean {_short(c)}" for c in chans]], rows)
    for c, s in chans.items():
        if isinstance(s, Mapping):
            missing = s.get("missing")
            if missing:
                lines.append(f"{c}: no yield for {', '.join(map(str, missing))}")
    return "\n".join(lines + _warnings(summary))


FORMATTERS = {"fit": format_fit, "normalise": format_normalise, "detlim": format_detlim,
              "quantify": format_quantify}
