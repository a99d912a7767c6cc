"""The ``-O KEY=VALUE`` options of the ``xrfproc`` subcommands, checked against the API's parameters.

Each subcommand that takes ``-O`` passes its keys to one :mod:`xrfproc.api` function. The keys it
accepts are the keyword parameters of that function (by :func:`inspect.signature`), less those the
subcommand sets itself from a dedicated flag (``--mode``, ``--channel``, ...), plus, where the function
forwards ``**options``, the keyword parameters of the function it forwards them to (``convert``: the
reader of the file's format, :mod:`xrfproc.core.convert`; ``fit --mode engine``: the engine's
``fit_block``; ``config``: :func:`xrfproc.core.fitconfig.make_config`; ``suggest``:
:func:`xrfproc.core.identify.identify_elements`).

An unknown key raises :class:`~xrfproc.errors.InputError` with one line naming the accepted keys
(and the closest one, for a misspelling such as ``energy_kev``); a key that a flag sets names the flag.
The modules are imported only when a subcommand's keys are asked for: ``xrfproc --help`` stays fast.
"""
from __future__ import annotations

import difflib
import inspect
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import InputError

log = logging.getLogger(__name__)

#: parameters never given through -O (the progress callback is the front-end's)
_NEVER = frozenset({"progress"})


def parse_value(text: str) -> Any:
    """An option value: JSON (numbers, ``true``/``false``, ``null``, lists such as ``[10, 10]``),
    else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: value}`` (values by :func:`parse_value`).

    Raises
    ------
    InputError
        For an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"option {pair!r} must be KEY=VALUE (e.g. -O scan=1.1)")
        out[key.strip()] = parse_value(value.strip())
    return out


def keyword_parameters(func: Callable[..., Any], exclude: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
    """The parameters of ``func`` that can be given by keyword, less ``exclude`` (and ``progress``)."""
    skip = set(exclude) | _NEVER
    return {name: p for name, p in inspect.signature(func).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in skip}


def describe(p: inspect.Parameter) -> str:
    """``name=default`` (or ``name`` for a required parameter) for help texts."""
    if p.default is inspect.Parameter.empty:
        return p.name
    default = p.default
    if isinstance(default, tuple):
        default = list(default)
    try:
        text = json.dumps(default)
    except (TypeError, ValueError):
        text = repr(default)
    return f"{p.name}={text}"


@dataclass
class OptionSet:
    """The keys one subcommand accepts.

    Attributes
    ----------
    command : str
        The subcommand (for messages).
    accepted : dict name -> Parameter
        Keys that ``-O`` may give, with their defaults.
    flags : dict name -> str
        Parameters the subcommand sets from a flag (``{"mode": "--mode"}``): ``-O mode=`` names the flag.
    notes : dict name -> str
        Keys refused with a reason of their own (``refine``: only with ``--mode engine``).
    """

    command: str
    accepted: dict[str, inspect.Parameter]
    flags: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def check(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` unchanged when every key is accepted.

        Raises
        ------
        InputError
            One line: the first unknown key, the closest accepted one, and the accepted keys.
        """
        for key in options:
            if key in self.accepted:
                continue
            if key in self.flags:
                raise InputError(f"{self.command}: -O {key}= is set with {self.flags[key]}; use that flag")
            if key in self.notes:
                raise InputError(f"{self.command}: -O {key}= {self.notes[key]}")
            valid = sorted(self.accepted)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6) or \
                [v for v in valid if v.lower() == key.lower()]
            hint = f" (did you mean {close[0]}?)" if close else ""
            listed = ", ".join(valid) if valid else "none"
            raise InputError(f"{self.command}: unknown option -O {key}{hint}; accepted keys: {listed}")
        return dict(options)

    def help_text(self) -> str:
        """The accepted keys with their defaults, for ``--help``."""
        if not self.accepted:
            return "accepted -O keys: none"
        return "accepted -O keys (default): " + ", ".join(describe(p) for p in self.accepted.values())


# ---------------------------------------------------------------------------------------------------
# per subcommand


def convert_options(kind: str = "auto", source: Any = None) -> OptionSet:
    """Keys of ``xrfproc convert``: :func:`xrfproc.api.convert`'s and those of the format's reader.

    ``kind="auto"`` with a ``source`` detects the format first (as the conversion will); without one,
    the keys of every reader are accepted (for help texts).
    """
    from . import api
    from .core import convert as conv

    flags = {"source": "the SOURCE argument", "out": "-o/--output", "kind": "--kind", "compression": "--compression"}
    accepted = keyword_parameters(api.convert, exclude=flags)
    if kind == "auto" and source is not None:
        first = source[0] if isinstance(source, (list, tuple)) and source else source
        kind = conv.detect_kind(first)
    mods = conv._modules() if kind == "auto" else [conv.reader(kind)]
    for mod in mods:
        accepted.update(reader_parameters(mod))
    return OptionSet("convert" if kind == "auto" else f"convert (--kind {kind})", accepted, flags)


def reader_parameters(mod: Any) -> dict[str, inspect.Parameter]:
    """The options one reader module takes: its ``read``'s keyword parameters, ``energy_keV`` (every
    reader: :func:`xrfproc.core.convert.read_any` records it), ``atol`` (stitching several scans) and,
    for ``npy``, its per-point arrays (``I0=``, ``icr=``, ...)."""
    from .core import convert as conv

    params = keyword_parameters(mod.read, exclude=("source",))
    for name, func in (("energy_keV", conv.read_any), ("atol", conv.merge)):
        sig = inspect.signature(func).parameters
        params.setdefault(name, sig.get(name) or inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None))
    for name in getattr(mod, "_PER_POINT", ()):
        params.setdefault(name, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None))
    return params


def fit_options(mode: str | None = "fast") -> OptionSet:
    """Keys of ``xrfproc fit``: :func:`xrfproc.steps.fit.fit`'s, and the engine's ``fit_block`` options
    with ``--mode engine`` (``None``: every mode's, for help texts)."""
    from .core import fit_engine
    from .steps.fit import fit

    flags = {"h5file": "the FILE argument", "config": "the CONFIG argument", "channel": "--channel",
             "mode": "--mode", "weight": "--weight", "background": "--background", "calibration": "--calibration",
             "resume": "--resume"}
    accepted = keyword_parameters(fit, exclude=flags)
    engine = keyword_parameters(fit_engine.fit_block, exclude=("model", "spectra"))
    notes: dict[str, str] = {}
    if mode in (None, "engine"):
        accepted.update(engine)
    else:
        notes = {k: "is an option of the engine: only with --mode engine" for k in engine}
    return OptionSet("fit", accepted, flags, notes)


def config_options() -> OptionSet:
    """Keys of ``xrfproc config``: :func:`xrfproc.steps.configure.make_config`'s and those of
    :func:`xrfproc.core.fitconfig.make_config` it forwards (calibration and channel count come from
    the file)."""
    from .core import fitconfig
    from .steps.configure import make_config

    flags = {"h5file": "the FILE argument", "elements": "the ELEMENTS arguments", "energy_keV": "--energy"}
    accepted = keyword_parameters(make_config, exclude=flags)
    accepted.update(keyword_parameters(fitconfig.make_config,
                                       exclude=("path", "elements", "energy_keV", "nbins", "zero", "gain")))
    notes = {k: "is measured from the spectrum; give calibration=[zero, gain] (keV) instead"
             for k in ("zero", "gain")}
    notes["nbins"] = "comes from the spectra"
    return OptionSet("config", accepted, flags, notes)


def suggest_options() -> OptionSet:
    """Keys of ``xrfproc suggest``: :func:`xrfproc.core.identify.identify_elements`'s, and
    ``calibration=[zero, gain]``."""
    from .core import identify
    from .steps.configure import suggest_elements

    flags = {"h5file": "the FILE argument", "energy_keV": "--energy", "channel": "--channel",
             "evidence": "--evidence"}
    accepted = keyword_parameters(suggest_elements, exclude=flags)
    accepted["calibration"] = inspect.Parameter("calibration", inspect.Parameter.KEYWORD_ONLY, default=None)
    accepted.update(keyword_parameters(identify.identify_elements, exclude=("spectrum", "calibration", "energy_keV")))
    return OptionSet("suggest", accepted, flags)


def normalise_options() -> OptionSet:
    """Keys of ``xrfproc normalise`` (:func:`xrfproc.steps.normalise.normalise`)."""
    from .steps.normalise import normalise

    flags = {"h5file": "the FILE argument", "I0norm": "--I0norm", "snake": "--snake", "sort": "--sort",
             "tmnorm": "--tmnorm", "timetriggered": "--timetriggered", "halfpixshift": "--no-halfpixshift",
             "method": "--method", "resume": "--resume"}
    return OptionSet("normalise", keyword_parameters(normalise, exclude=flags), flags)


def detlim_options() -> OptionSet:
    """Keys of ``xrfproc detlim`` (:func:`xrfproc.steps.detlim.detlim`)."""
    from .steps.detlim import detlim

    flags = {"h5file": "the FILE argument", "cncfile": "the CNC argument"}
    return OptionSet("detlim", keyword_parameters(detlim, exclude=flags), flags)


def quantify_options() -> OptionSet:
    """Keys of ``xrfproc quantify`` (:func:`xrfproc.steps.quant.quantify`)."""
    from .steps.quant import quantify

    flags = {"h5file": "the FILE argument", "references": "the REFERENCES arguments", "channel": "--channel",
             "norm": "--norm", "absorb": "--absorb/--absorb-matrix", "matrix": "--matrix"}
    return OptionSet("quantify", keyword_parameters(quantify, exclude=flags), flags)


def image_options() -> OptionSet:
    """Keys of ``xrfproc image`` (:func:`xrfproc.steps.imaging.overview_images`)."""
    from .steps.imaging import overview_images

    flags = {"h5file": "the FILE argument", "datadir": "the DATADIR argument", "ncols": "--cols",
             "pix_size_um": "--pixel-um", "scale_bar_um": "--scale-um", "log": "--log", "channel": "--channel"}
    return OptionSet("image", keyword_parameters(overview_images, exclude=flags), flags)


#: subcommand -> the function giving its keys for help texts (all modes, all formats)
HELP_SETS: dict[str, Callable[[], OptionSet]] = {
    "convert": convert_options, "fit": lambda: fit_options(None), "config": config_options,
    "suggest": suggest_options, "normalise": normalise_options, "detlim": detlim_options,
    "quantify": quantify_options, "image": image_options,
}


def help_for(command: str) -> str:
    """The help paragraph listing the ``-O`` keys of ``command`` (with the reader of each format for
    ``convert``); empty when the command takes none."""
    if command not in HELP_SETS:
        return ""
    if command == "convert":
        from .core import convert as conv

        lines = ["accepted -O keys by format (default):"]
        for mod in conv._modules():
            params = reader_parameters(mod)
            lines.append(f"  {mod.KIND}: " + ", ".join(describe(p) for p in params.values()))
        return "\n".join(lines)
    text = HELP_SETS[command]().help_text()
    if command == "fit":
        from .core import fit_engine

        engine = keyword_parameters(fit_engine.fit_block, exclude=("model", "spectra"))
        text += f" ({', '.join(engine)}: --mode engine only)"
    return text
