"""Fuzz the text and binary readers with hypothesis: whatever the bytes, only our errors come out.

Each reader gets mutations of a valid file (lines dropped, duplicated, fields replaced by odd tokens,
bytes flipped, integers overwritten, the file cut short) and some entirely random input. A reader
may accept the input (and must then return a consistent result) or raise an
:class:`xrfproc.errors.XrfError`; any other exception is a bug. Runs derandomized (reproducible in CI).
"""
from __future__ import annotations

import random
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrfproc.core import fitconfig
from xrfproc.core.cnc import bundled_cnc, read_cnc
from xrfproc.core.convert import gse_mca, mda, spe
from xrfproc.core.mdafile import level_arrays, read_mda
from xrfproc.errors import XrfError
from xrfproc.testing.mda_fixture import ScanSpec, write_mda

#: examples per reader; the file stays well under a minute
N = 2000
FUZZ = settings(max_examples=N, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
WORK = Path(tempfile.mkdtemp(prefix="xrfproc-fuzz-"))
#: counters reported by the README "Reliability" figures (examples run, accepted, rejected with our error)
STATS: dict[str, dict[str, int]] = {}

TOKENS = ["", " ", "0", "-1", "1e308", "-1e308", "nan", "inf", "-inf", "1e-320", "2147483648", "99999999999999999999",
          "abc", "\x00", "é", "\udcff", "ppm", "ug/cm2", "(ppm)", "[fit]", "[peaks]", "=", "$DATA:", "0 2047",
          "1.5", "K", "Fe", "Fe = K", "None", "[]", "[1, 2]", "\t", "#", ";"]


def _count(target: str, outcome: str) -> None:
    STATS.setdefault(target, {"run": 0, "accepted": 0, "rejected": 0})
    STATS[target]["run"] += 1
    STATS[target][outcome] += 1


def _mutate_lines(rng: random.Random, text: str, junk: str) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(0, 5)):
        if not lines:
            lines = [""]
        i = rng.randrange(len(lines))
        op = rng.choice(["drop", "dup", "token", "field", "field", "insert", "cut", "swap"])
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "token":
            lines[i] = rng.choice(TOKENS + [junk])
        elif op == "field":
            parts = lines[i].split()
            if parts:
                parts[rng.randrange(len(parts))] = rng.choice(TOKENS + [junk])
                lines[i] = " ".join(parts)
        elif op == "insert":
            lines.insert(i, rng.choice(TOKENS + [junk]))
        elif op == "cut":
            lines = lines[:i]
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _text_input(seed: int, junk: str, template: str) -> bytes:
    """A mutated template (mostly) or random text, sometimes with an invalid utf-8 byte.

    Hypothesis draws the seed and a random string; the mutations follow from the seed (cheap draws
    keep thousands of examples fast).
    """
    rng = random.Random(seed)
    text = junk if rng.random() < 0.1 else _mutate_lines(rng, template, junk)
    raw = text.encode("utf-8", "surrogateescape")
    if raw and rng.random() < 0.3:
        i = rng.randrange(len(raw))
        raw = raw[:i] + bytes([rng.randint(0x80, 0xFF)]) + raw[i + 1:]
    return raw


SEEDS = st.integers(0, 2**32 - 1)
JUNK = st.text(max_size=30)


def _only_ours(target: str, func, path: Path) -> object | None:
    try:
        out = func(path)
    except XrfError as exc:
        assert str(exc), "an error without a message"
        _count(target, "rejected")
        return None
    _count(target, "accepted")
    return out


# --------------------------------------------------------------------------- .cnc
CNC_TEMPLATE = bundled_cnc("nist613").read_text(encoding="latin-1")
CNC_TEMPLATE = "\n".join(CNC_TEMPLATE.splitlines()[:5] + ["9"] + CNC_TEMPLATE.splitlines()[6:16])  # 9 elements


@FUZZ
@given(SEEDS, JUNK)
def test_fuzz_cnc(seed, junk):
    path = WORK / "f.cnc"
    path.write_bytes(_text_input(seed, junk, CNC_TEMPLATE))
    cnc = _only_ours("cnc", read_cnc, path)
    if cnc is not None:
        assert len(cnc.z) == len(cnc.conc) == len(cnc.err)
        assert np.all((cnc.z >= 1) & (cnc.z <= 98)) and np.all(cnc.conc >= 0)


# --------------------------------------------------------------------------- .spe
SPE_TEMPLATE = "\n".join(["$SPEC_ID:", "test spectrum", "$DATE_MEA:", "01/01/2024 00:00:00", "$MEAS_TIM:",
                          "10 12", "$ENER_FIT:", "0.01 0.02", "$DATA:", "0 15"]
                         + [" ".join(str(v) for v in range(i, i + 8)) for i in (0, 8)])


@FUZZ
@given(SEEDS, JUNK)
def test_fuzz_spe(seed, junk):
    path = WORK / "f.spe"
    path.write_bytes(_text_input(seed, junk, SPE_TEMPLATE))
    raw = _only_ours("spe", spe.read, path)
    if raw is not None:
        raw.validate()


# --------------------------------------------------------------------------- GSE .mca
GSE_TEMPLATE = "\n".join(["VERSION:    3.1", "ELEMENTS:              2", "DATE:       Feb 07, 2005 03:35:31.649",
                          "CHANNELS:             16", "REAL_TIME:   2.0 2.0", "LIVE_TIME:   1.8 1.7",
                          "CAL_OFFSET:  0.02 0.02", "CAL_SLOPE:   0.0139 0.0139", "CAL_QUAD:    0.0 0.0",
                          'ENVIRONMENT: 13IDA:E:Energy.VAL="11800.00000" (Mono Energy request)', "DATA: "]
                         + [f"{i} {2 * i}" for i in range(16)])


@FUZZ
@given(SEEDS, JUNK)
def test_fuzz_gse_mca(seed, junk):
    path = WORK / "f.mca"
    path.write_bytes(_text_input(seed, junk, GSE_TEMPLATE))
    raw = _only_ours("gse", gse_mca.read, path)
    if raw is not None:
        raw.validate()


# --------------------------------------------------------------------------- PyMca .cfg
def _cfg_template() -> str:
    path = fitconfig.make_config(WORK / "template.cfg", {"Fe": "K", "Zn": "K"}, 18.0, nbins=512, escape=False)
    return path.read_text()


CFG_TEMPLATE = _cfg_template()


def _cfg_input(seed: int, junk: str) -> tuple[bytes, str]:
    """Mutations that matter for a PyMca config: sections dropped, keys set to odd values."""
    rng = random.Random(seed)
    lines = CFG_TEMPLATE.split("\n")
    keys = [i for i, ln in enumerate(lines) if "=" in ln]
    for _ in range(rng.randint(0, 4)):
        i = rng.choice(keys)
        lines[i] = lines[i].split("=", 1)[0] + "= " + rng.choice(TOKENS + [junk])
    sections = [i for i, ln in enumerate(lines) if ln.startswith("[") and not ln.startswith("[[")]
    if rng.random() < 0.5:
        i = rng.choice(sections)
        j = next((k for k in sections if k > i), len(lines))
        del lines[i:j]  # a whole section missing
    text = "\n".join(lines)
    if rng.random() < 0.2:
        text = _mutate_lines(rng, text, junk)
    return text.encode("utf-8", "surrogateescape"), rng.choice(["fast", "precise"])


@FUZZ
@given(SEEDS, JUNK)
def test_fuzz_pymca_cfg(seed, junk):
    path = WORK / "f.cfg"
    text, mode = _cfg_input(seed, junk)
    path.write_bytes(text)
    cfg = _only_ours("cfg", lambda p: fitconfig.read_config(p, mode=mode, nbins=512), path)
    if cfg is not None:
        assert {"fit", "detector", "peaks"} <= set(cfg.config)


# --------------------------------------------------------------------------- MDA bytes
def _mda_template() -> bytes:
    rng = np.random.default_rng(0)
    nbins = mda.MIN_SPECTRUM_LENGTH  # the innermost level holds spectra
    pixels = [ScanSpec(1, nbins, nbins, "t:scanH",
                       detectors=[(0, "t:mca1.VAL", "", "", rng.poisson(5, nbins).astype(float))]) for _ in range(3)]
    line = ScanSpec(2, 3, 3, "t:scan1", positioners=[(0, "t:m1.VAL", "", "mm", np.arange(3) * 0.1)],
                    detectors=[(0, "t:dxp1:InputCountRate", "", "", np.full(3, 100.0)),
                               (1, "t:dxp1:OutputCountRate", "", "", np.full(3, 50.0))],
                    children=pixels)
    return write_mda(WORK / "template.mda", line, extra=[("t:energy", "mono", 30, 12.0)]).read_bytes()


MDA_TEMPLATE = _mda_template()
INTS = [0, 1, -1, 2, 3, 7, 32, 0x7FFFFFFF, -0x80000000, 1 << 20, 1 << 30, 100000, len(MDA_TEMPLATE),
        len(MDA_TEMPLATE) - 4, 65536]


def _mda_input(seed: int) -> bytes:
    rng = random.Random(seed)
    buf = bytearray(MDA_TEMPLATE)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["int", "int", "int", "flip", "byte", "cut"])
        pos = rng.randrange(len(buf)) if buf else 0
        if op == "int" and len(buf) >= 4:
            pos = 4 * rng.randrange(len(buf) // 4)
            value = rng.choice(INTS) if rng.random() < 0.7 else rng.randint(-2**31, 2**31 - 1)
            buf[pos:pos + 4] = struct.pack(">i", value)
        elif op == "flip" and buf:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == "byte" and buf:
            buf[pos] = rng.randrange(256)
        elif op == "cut":
            del buf[pos:]
    return bytes(buf)


def _read_mda_fully(path: Path) -> object:
    m = read_mda(path)
    for level in range(1, m.rank + 1):
        level_arrays(m, level)
        level_arrays(m, level, "positioners")
    return mda.read(path)


@FUZZ
@given(SEEDS)
def test_fuzz_mda_bytes(seed):
    path = WORK / "f.mda"
    path.write_bytes(_mda_input(seed))
    raw = _only_ours("mda", _read_mda_fully, path)
    if raw is not None:
        raw.validate()


def test_fuzz_figures():
    """Runs last in this file: every fuzz target ran its examples (the figures quoted in the README)."""
    ran = {k: v for k, v in STATS.items()}
    if not ran:
        pytest.skip("fuzz tests deselected")
    for target, counts in ran.items():
        assert counts["run"] >= N * 0.9, (target, counts)
        print(f"fuzz {target}: {counts}")
