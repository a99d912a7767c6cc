"""Concentration files (``.cnc``): the composition of a reference material or of a sample matrix.

Format (tab separated, as in the original xrf_proc)::

    Standard_Name
    NIST 613
    Density(mg/cm^3)  Mass(mg)  Sample_thickness(micron)
    2490.945          360       960
    Number of elements
    70
    Z   Cert conc(ppm)   Standard_error(ppm)
    1   23.33            0
    ...
    (free notes after a blank line)

The concentration unit is read from the ``Z`` header line: ``ppm`` (mass fraction x 1e6) or an
areal unit (``ng/mm^2``, ``ug/cm^2``) for thin films such as AXO standards.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

#: units read from the header, and the factor to ug/cm^2 for areal ones
AREAL_UNITS = {"ng/mm^2": 0.1, "ng/mm2": 0.1, "ug/cm^2": 1.0, "ug/cm2": 1.0, "µg/cm^2": 1.0, "µg/cm2": 1.0}
MASS_UNITS = {"ppm": 1.0, "mg/kg": 1.0, "ug/g": 1.0, "µg/g": 1.0}


@dataclass
class Cnc:
    """A concentration file.

    Attributes
    ----------
    name : str
    z : ndarray of int, shape (n,)
        Atomic numbers.
    conc, err : ndarray of float, shape (n,)
        Concentrations and their 1-sigma errors, in ``unit``.
    unit : str
        ``"ppm"`` (mass fraction x 1e6) or an areal unit (``"ng/mm^2"``, ``"ug/cm^2"``).
    density : float
        mg/cm^3.
    mass : float
        mg.
    thickness : float
        um.
    notes : list of str
    """

    name: str
    z: np.ndarray
    conc: np.ndarray
    err: np.ndarray
    unit: str = "ppm"
    density: float = 0.0
    mass: float = 0.0
    thickness: float = 0.0
    notes: list[str] = field(default_factory=list)
    path: str | None = None

    @property
    def areal(self) -> bool:
        """True when concentrations are areal (thin film), not mass fractions."""
        return self.unit in AREAL_UNITS

    def areal_ug_cm2(self) -> np.ndarray:
        """Areal concentrations in ug/cm^2 (bulk files: ppm x density x thickness)."""
        if self.areal:
            return self.conc * AREAL_UNITS[self.unit]
        # ppm * 1e-6 * rho[g/cm3] * d[cm] * 1e6 ug/g
        return self.conc * (self.density / 1000.0) * (self.thickness * 1e-4)

    def mass_fractions(self) -> dict[int, float]:
        """``{Z: mass fraction}`` (bulk files only)."""
        if self.areal:
            raise ConfigError(f"concentrations are areal ({self.unit}), not mass fractions", path=self.path)
        return {int(z): float(c) * 1e-6 for z, c in zip(self.z, self.conc)}


BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "cnc"

#: largest concentration file read (bytes; a real one is a few kB); ``XRFPROC_MAX_CNC_BYTES`` changes it
MAX_CNC_BYTES = 10 * 1024 * 1024


def max_cnc_bytes() -> int:
    """Largest ``.cnc`` file :func:`read_cnc` reads (``XRFPROC_MAX_CNC_BYTES``, default 10 MiB)."""
    env = os.environ.get("XRFPROC_MAX_CNC_BYTES", "")
    return int(env) if env.isdigit() else MAX_CNC_BYTES


def _read_bounded(path: Path) -> bytes:
    """The bytes of a regular file of at most :func:`max_cnc_bytes`, or a ConfigError naming it.

    Devices, FIFOs and folders (also behind a symbolic link: ``/dev/zero`` never ends) are refused
    before reading; at most one byte more than the limit is ever read, so a file growing meanwhile
    is refused too.
    """
    limit = max_cnc_bytes()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except OSError as exc:
        raise ConfigError(f"cannot read concentration file ({exc.strerror})", path=path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("not a regular file (a device, pipe or folder); a concentration file is a small "
                              "text file", path=path)
        if st.st_size > limit:
            raise ConfigError(f"{st.st_size} bytes: too large for a concentration file (limit {limit} bytes, "
                              "XRFPROC_MAX_CNC_BYTES)", path=path)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read concentration file ({exc.strerror})", path=path) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigError(f"more than {limit} bytes: too large for a concentration file (XRFPROC_MAX_CNC_BYTES)",
                          path=path)
    return data


def bundled_cnc(name: str) -> Path:
    """Path of a reference ``.cnc`` shipped with xrfproc (``"nist613"`` or ``"nist613.cnc"``).

    ``$XRFPROC_CNC_DIR`` is searched first.
    """
    import os

    fname = name if name.endswith(".cnc") else name + ".cnc"
    for folder in (os.environ.get("XRFPROC_CNC_DIR"), BUNDLED_DIR):
        if folder and (Path(folder) / fname).is_file():
            return Path(folder) / fname
    known = ", ".join(sorted(p.stem for p in BUNDLED_DIR.glob("*.cnc")))
    raise ConfigError(f"no concentration file {fname!r}; bundled ones: {known}")


def resolve_cnc(path: str | Path) -> Path:
    """``path`` if it exists, else the bundled file of that name (a bare name such as ``nist613.cnc``)."""
    p = Path(path)
    if p.exists() or p.parent != Path("."):
        return p
    try:
        return bundled_cnc(p.name)
    except ConfigError:
        return p


def _fields(line: str) -> list[str]:
    return [p.strip() for p in line.rstrip("\r\n").split("\t") if p.strip()] or line.split()


def _float(text: str, path: Path, lineno: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"line {lineno}: {what} must be a number, found {text!r}", path=path) from None
    if not np.isfinite(value):
        raise ConfigError(f"line {lineno}: {what} must be finite, found {text!r}", path=path)
    return value


def _unit_of(header: str, path: Path, lineno: int) -> str:
    match = re.search(r"conc\S*\s*\(([^)]*)\)", header, flags=re.IGNORECASE)
    if not match:
        raise ConfigError(f"line {lineno}: expected 'Z  Cert conc(<unit>)  Standard_error(<unit>)', found {header.strip()!r}",
                          path=path)
    unit = match.group(1).strip()
    if unit not in MASS_UNITS and unit not in AREAL_UNITS:
        raise ConfigError(f"line {lineno}: unknown concentration unit {unit!r}; expected ppm or one of "
                          f"{', '.join(sorted(AREAL_UNITS))}", path=path)
    return "ppm" if unit in MASS_UNITS else unit


def read_cnc(path: str | Path) -> Cnc:
    """Read and validate a concentration file.

    Raises
    ------
    ConfigError
        Naming the file and line: missing header, non-numeric values, a count that does not match
        the rows, Z outside 1..98, negative concentrations, unknown units; a file that is not a
        regular file or is larger than :func:`max_cnc_bytes` (a ConfigError is an InputError).
    """
    path = resolve_cnc(path)
    raw = _read_bounded(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.splitlines()
    if len(lines) < 7:
        raise ConfigError(f"{len(lines)} lines; a concentration file has at least 7 header lines", path=path)
    name = " ".join(_fields(lines[1])) if lines[1].strip() else path.stem
    props = _fields(lines[3])
    if len(props) < 3:
        raise ConfigError(f"line 4: expected density, mass and thickness, found {lines[3].strip()!r}", path=path)
    density, mass, thickness = (_float(p, path, 4, w) for p, w in zip(props[:3], ("density", "mass", "thickness")))
    count_fields = _fields(lines[5])
    if not count_fields:
        raise ConfigError("line 6: expected the number of elements", path=path)
    count = _float(count_fields[0], path, 6, "the number of elements")
    if count != int(count) or count < 0:
        raise ConfigError(f"line 6: the number of elements must be a whole number, found {count_fields[0]!r}", path=path)
    n = int(count)
    unit = _unit_of(lines[6], path, 7)
    z, conc, err = [], [], []
    for i in range(n):
        lineno = 8 + i
        if 7 + i >= len(lines) or not lines[7 + i].strip():
            raise ConfigError(f"line 6 announces {n} elements but only {i} rows follow (line {lineno} is "
                              f"{'missing' if 7 + i >= len(lines) else 'empty'})", path=path)
        parts = _fields(lines[7 + i])
        if len(parts) < 2:
            raise ConfigError(f"line {lineno}: expected 'Z  concentration  [error]', found {lines[7 + i].strip()!r}",
                              path=path)
        row = _row(parts, path, lineno)
        z.append(row[0]), conc.append(row[1]), err.append(row[2])
    rest = lines[7 + n:]
    # rows beyond the announced count (a real file, sarm69.cnc, forgets its last row): read them, warn
    extra = 0
    while extra < len(rest) and rest[extra].strip() and _looks_like_row(rest[extra]):
        row = _row(_fields(rest[extra]), path, 8 + n + extra)
        z.append(row[0]), conc.append(row[1]), err.append(row[2])
        extra += 1
    if extra:
        log.warning("%s: line 6 announces %d elements but %d rows follow; all %d are read", path, n, n + extra,
                    n + extra)
        rest = rest[extra:]
    if len(set(z)) != len(z):
        dup = sorted(v for v, k in Counter(z).items() if k > 1)
        shown = ", ".join(map(str, dup[:12])) + (f", ... ({len(dup)} elements)" if len(dup) > 12 else "")
        raise ConfigError(f"element(s) Z=[{shown}] listed twice", path=path)
    notes = [ln.strip() for ln in rest if ln.strip() and ln.strip().lower() != "notes"]
    cnc = Cnc(name=name, z=np.array(z, dtype=int), conc=np.array(conc), err=np.array(err), unit=unit,
              density=density, mass=mass, thickness=thickness, notes=notes, path=str(path))
    if unit == "ppm" and n:
        total = float(np.sum(conc))
        if not 0.9e6 <= total <= 1.1e6:
            log.warning("%s: concentrations sum to %.4g ppm, far from 1e6 ppm", path, total)
    return cnc


def _row(parts: list[str], path: Path, lineno: int) -> tuple[int, float, float]:
    """One ``Z  concentration  [error]`` row, validated."""
    zi = _float(parts[0], path, lineno, "Z")
    if zi != int(zi) or not 1 <= zi <= 98:
        raise ConfigError(f"line {lineno}: Z must be a whole number in 1..98, found {parts[0]!r}", path=path)
    ci = _float(parts[1], path, lineno, "the concentration")
    ei = _float(parts[2], path, lineno, "the error") if len(parts) > 2 else 0.0
    if ci < 0 or ei < 0:
        raise ConfigError(f"line {lineno}: concentration and error must not be negative", path=path)
    return int(zi), ci, ei


def _looks_like_row(line: str) -> bool:
    parts = _fields(line)
    try:
        float(parts[0])
        float(parts[1])
        return True
    except (ValueError, IndexError):
        return False


def write_cnc(path: str | Path, cnc: Cnc) -> Path:
    """Write ``cnc`` in the tab-separated format :func:`read_cnc` reads."""
    path = Path(path)
    conc_unit = cnc.unit
    rows = [
        "Standard_Name\t\t", f"{cnc.name}\t\t", "Density(mg/cm^3)\tMass(mg)\tSample_thickness(micron)",
        f"{cnc.density:g}\t{cnc.mass:g}\t{cnc.thickness:g}", "Number of elements\t\t", f"{len(cnc.z)}\t\t",
        f"Z\tCert conc({conc_unit})\tStandard_error({conc_unit})",
    ]
    rows += [f"{int(z)}\t{c:.10g}\t{e:.10g}" for z, c, e in zip(cnc.z, cnc.conc, cnc.err)]
    if cnc.notes:
        rows += ["\t\t", "Notes"] + list(cnc.notes)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
