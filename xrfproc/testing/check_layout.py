#!/usr/bin/env python3
"""Check an HDF5 file against the uniform xrf_proc layout (the groups of the original xrf_proc; see the
README's "The file layout" section).

Source: the project's shared layout checker (``shared/tools/check_layout.py`` beside the repository),
copied here unchanged except for this docstring so that a clone of the repository (and an installed
xrfproc: ``python -m xrfproc.testing.check_layout FILE.h5``) has it. It is the independent validator the
tests run on every file the converters and steps write.

usage: check_layout.py FILE.h5 [FILE.h5 ...]
Prints one line per problem and a summary; exit status 1 when a file has problems, 2 when it cannot
be opened. Only needs h5py and numpy. Groups that a file does not have are not required, except raw/.
"""
import sys
import numpy as np
import h5py

problems = []


def bad(path, msg):
    problems.append(f"{path}: {msg}")


def names_ok(g, key, n=None):
    if key not in g:
        bad(g.name, f"missing '{key}'"); return None
    ds = g[key]
    vals = ds[()]
    vals = np.atleast_1d(vals)
    if vals.dtype.kind not in "SO":
        bad(ds.name, f"names must be utf-8 encoded byte strings, found dtype {vals.dtype}")
        return len(vals)
    for v in vals:
        if isinstance(v, bytes):
            try:
                v.decode("utf8")
            except UnicodeDecodeError:
                bad(ds.name, f"name {v!r} is not utf-8")
        elif not isinstance(v, str):
            bad(ds.name, f"name {v!r} is not a string")
    if n is not None and len(vals) != n:
        bad(ds.name, f"{len(vals)} names for {n} images")
    return len(vals)


def gzip4(ds):
    if ds.size >= 1000 and ds.compression != "gzip":
        bad(ds.name, f"array of {ds.size} values not gzip-compressed (compression={ds.compression})")
    elif ds.compression == "gzip" and ds.compression_opts != 4:
        bad(ds.name, f"gzip level {ds.compression_opts}, the layout uses 4")


def image_stack(g, spatial, key="ims"):
    if key not in g:
        bad(g.name, f"missing '{key}'"); return None
    ds = g[key]; gzip4(ds)
    if spatial is not None and tuple(ds.shape[1:]) != tuple(spatial) and ds.ndim == len(spatial) + 1:
        # regridded or tomographic data may change the spatial shape; only report a rank mismatch
        pass
    if ds.ndim < 2:
        bad(ds.name, f"an image stack must be (lines, ...) with rank >= 2, found shape {ds.shape}")
    return ds.shape[0]


def check_raw(f):
    if "raw" not in f:
        bad("/", "missing raw/"); return None
    raw = f["raw"]
    chans = sorted(k for k in raw if k.startswith("channel"))
    if not chans:
        bad("/raw", "no channelXX group")
    spatial = None
    for c in chans:
        g = raw[c]
        if "spectra" not in g:
            bad(g.name, "missing spectra"); continue
        sp = g["spectra"]; gzip4(sp)
        spatial = sp.shape[:-1]; nch = sp.shape[-1]
        for k in ("icr", "ocr"):
            if k not in g:
                bad(g.name, f"missing {k}")
            elif g[k].shape != spatial:
                bad(g[k].name, f"shape {g[k].shape}, spectra are {sp.shape}")
        for k in ("sumspec", "maxspec"):
            if k not in g:
                bad(g.name, f"missing {k}")
            elif g[k].shape != (nch,):
                bad(g[k].name, f"shape {g[k].shape}, want ({nch},)")
    for k in ("I0", "acquisition_time"):
        if k not in raw:
            bad("/raw", f"missing {k}")
        elif spatial is not None and raw[k].shape != spatial:
            bad(raw[k].name, f"shape {raw[k].shape}, spectra grid is {spatial}")
    if "I1" in raw and spatial is not None and raw["I1"].shape != spatial:
        bad(raw["I1"].name, f"shape {raw['I1'].shape}, spectra grid is {spatial}")
    for k in ("mot1", "mot2"):
        if k not in f and k not in raw:
            bad("/", f"missing {k}")
    if "cmd" not in f:
        bad("/", "missing cmd")
    return spatial


def check_result(f, top, spatial, sums=True):
    for c in sorted(k for k in f[top] if k.startswith("channel")):
        g = f[top][c]
        n = image_stack(g, spatial)
        names_ok(g, "names", n)
        if sums and "sum" in g:
            for k in ("int", "bkg"):
                if k in g["sum"] and n is not None and g["sum"][k].shape[0] != n:
                    bad(g["sum"][k].name, f"{g['sum'][k].shape[0]} values for {n} lines")


def check(path):
    try:
        f = h5py.File(path, "r")
    except Exception as e:
        print(f"{path}: cannot open: {e}"); return 2
    with f:
        spatial = check_raw(f)
        if "fit" in f:
            check_result(f, "fit", spatial)
            for c in (k for k in f["fit"] if k.startswith("channel")):
                if "cfg" not in f["fit"][c]:
                    bad(f["fit"][c].name, "missing cfg")
                if "sum" not in f["fit"][c]:
                    bad(f["fit"][c].name, "missing sum/int and sum/bkg")
        if "norm" in f:
            check_result(f, "norm", spatial)
            if "I0" not in f["norm"]:
                bad("/norm", "missing I0")
        for top in ("quant", "rel_dif", "tomo", "PCA"):
            if top in f:
                check_result(f, top, spatial, sums=(top != "tomo"))
        for top, leaf in (("detlim", ("1s", "1000s")), ("elyield", ("yield", "stddev"))):
            if top not in f:
                continue
            for cnc in f[top]:
                if not isinstance(f[top][cnc], h5py.Group):
                    continue
                for c in (k for k in f[top][cnc] if k.startswith("channel")):
                    g = f[top][cnc][c]
                    n = names_ok(g, "names")
                    for k in leaf:
                        if k not in g:
                            bad(g.name, f"missing {k}")
                        elif top == "detlim":
                            for d in ("data", "stddev"):
                                if d not in g[k]:
                                    bad(g[k].name, f"missing {d}")
                                elif n is not None and g[k][d].shape[0] != n:
                                    bad(g[k][d].name, f"{g[k][d].shape[0]} values for {n} names")
        if "kmeans" in f:
            for c in (k for k in f["kmeans"] if k.startswith("channel")):
                g = f["kmeans"][c]
                for k in ("ims", "nclusters", "data_dir_clustered", "el_id"):
                    if k not in g:
                        bad(g.name, f"missing {k}")
                if "nclusters" in g:
                    for i in range(int(g["nclusters"][()])):
                        if f"sumspec_{i}" not in g:
                            bad(g.name, f"missing sumspec_{i}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__); sys.exit(2)
    worst = 0
    for p in sys.argv[1:]:
        before = len(problems)
        worst = max(worst, check(p))
        mine = problems[before:]
        for line in mine:
            print(line)
        print(f"{p}: {'OK' if not mine else f'{len(mine)} problem(s)'}")
        if mine:
            worst = max(worst, 1)
    sys.exit(worst)
