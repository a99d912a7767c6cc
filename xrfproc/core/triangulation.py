"""Delaunay triangulation of scan positions, computed in bands of grid rows.

Linear regridding needs, for every grid point, the triangle of the measured points' Delaunay
triangulation that holds it and its barycentric coordinates. One triangulation of a whole map
costs about 600 bytes per point (qhull's memory and scipy's arrays): gigabytes for 10^7 points.
:func:`banded_geometry` computes the same answer one band of grid rows at a time, from the
triangulation of the measured points near the band only, so its working memory is bounded by the
band, not the map; what it keeps is 3 point indices and 3 weights per grid point.

Why a band gives the global answer
----------------------------------
A band ``[a, b)`` of grid rows triangulates the measured points ``S`` whose slow coordinate lies
within the band's rows widened by a margin (3 grid steps at first). Every answer is then checked
against the whole map, and the band is redone with twice the margin when a check fails:

- a triangle of ``DT(S)`` is a triangle of the global triangulation when no point outside ``S``
  lies in its circumcircle; points outside ``S`` lie beyond the margin in the slow direction and
  within the map's bounding box, so it suffices that the circumcircle, clipped to the bounding
  box, stays within the margin; the few circles that do not (slivers along the map's left and
  right edges) are checked against the points beyond the margin; triangles spanning masked holes,
  and grid points that the global triangulation covers with long triangles along a hull edge
  spanning many rows, get a wider margin;
- a grid point in no triangle of ``DT(S)`` is outside the global convex hull when it is not
  inside the hull of the whole map (computed beforehand, in chunks of points);
- the nearest point in ``S`` is the nearest of the map when it is closer than the margin.

Where the Delaunay triangulation is not unique (four or more co-circular points: measured
positions on an exact lattice), qhull's choice between the two diagonals of a square depends on
the order and set of its input: a band may then take the other valid triangle than the global
triangulation (both are Delaunay, so both are linear interpolations of equal standing; they agree
wherever the data are linear along the square). The same holds within qhull's rounding: on a
2000 x 2000 snake scan (positions jittered by 0.01 steps) 2 grid points of 4 million differed
from the one-triangulation result, in quadrilaterals co-circular to 2e-8, where the band took
the triangle with the empty circumcircle and qhull, on all 4 million points, the other. Likewise
a grid point exactly halfway between measured points may take the other one as nearest. With a
single band (maps up to ``band_points`` points) the result is the global computation itself.

qhull holds the GIL (two threads triangulating two bands take as long as one doing both), so
bands are computed one after another.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError, cKDTree

log = logging.getLogger(__name__)

#: tolerance of the barycentric coordinates, as scipy's Delaunay.find_simplex and LinearNDInterpolator
_EPS = 100 * np.finfo(np.float64).eps
#: grid points this close to a measured point (in grid steps) take its value without interpolation
_COINCIDE = 1e-9
#: simplices whose reciprocal condition number is below this are degenerate (as in scipy)
_RCOND = 1000 * np.finfo(np.float64).eps


def barycentric_transforms(tri: Delaunay) -> np.ndarray:
    """The affine transforms of a 2-D triangulation's simplices, as ``tri.transform`` holds them.

    ``c = T[s, :2] @ (x - T[s, 2])`` are the first two barycentric coordinates of ``x`` in simplex
    ``s``. Computed in closed form for all simplices at once (scipy's property calls LAPACK once per
    simplex: seconds for 10^5 points); equal to it to float rounding, NaN for the same degenerate
    (reciprocal condition number below 1000 eps) simplices.

    Returns
    -------
    ndarray, shape (nsimplex, 3, 2)
    """
    pts = tri.points
    simp = tri.simplices
    r = pts[simp[:, 2]]
    a = pts[simp[:, 0]] - r
    b = pts[simp[:, 1]] - r
    det = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]
    out = np.empty((len(simp), 3, 2))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out[:, 0, 0] = b[:, 1] / det
        out[:, 0, 1] = -b[:, 0] / det
        out[:, 1, 0] = -a[:, 1] / det
        out[:, 1, 1] = a[:, 0] / det
        norm = np.maximum(np.abs(a).sum(axis=1), np.abs(b).sum(axis=1))
        inv_norm = np.maximum(np.abs(out[:, :2, 0]).sum(axis=1), np.abs(out[:, :2, 1]).sum(axis=1))
        bad = ~(1.0 / (norm * inv_norm) >= _RCOND)
    out[:, 2] = r
    out[bad, :2] = np.nan
    out[bad, 2] = np.nan
    return out


def _coordinates(trans: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Barycentric coordinates ``(n, 3)`` of points ``x`` ``(n, 2)`` in simplices with transforms ``trans``
    ``(n, 3, 2)``, summed in the order scipy sums them."""
    d = x - trans[:, 2]
    c0 = trans[:, 0, 0] * d[:, 0] + trans[:, 0, 1] * d[:, 1]
    c1 = trans[:, 1, 0] * d[:, 0] + trans[:, 1, 1] * d[:, 1]
    return np.stack([c0, c1, 1.0 - c0 - c1], axis=1)


def _inside(c: np.ndarray) -> np.ndarray:
    return np.all(c >= -_EPS, axis=-1) & np.all(c <= 1.0 + _EPS, axis=-1)


def _search_near(tri: Delaunay, trans: np.ndarray, targets: np.ndarray, tree: cKDTree) -> np.ndarray:
    """Simplex of each target among those around its nearest points, else -1 outside the convex hull;
    ``tri.find_simplex`` for what is left (a target inside the hull but far from any vertex)."""
    flat = tri.simplices.reshape(-1)
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(tri.npoints + 1))
    out = np.full(len(targets), -1, dtype=np.intp)
    unknown = []
    for i, x in enumerate(targets):
        found = -1
        for k in (16, 128):
            verts = np.atleast_1d(tree.query(x, k=min(k, tri.npoints))[1])
            cands = np.unique(np.concatenate([order[starts[v]:starts[v + 1]] // 3 for v in verts]))
            ok = _inside(_coordinates(trans[cands], np.broadcast_to(x, (len(cands), 2))))
            if ok.any():
                found = int(cands[np.argmax(ok)])
                break
        if found < 0:
            unknown.append(i)
        out[i] = found
    if unknown:
        unknown = np.array(unknown)
        hull = tri.points[tri.convex_hull]  # (nedges, 2, 2): outside any hull edge's line -> outside
        centre = tri.points.mean(axis=0)
        ex = hull[:, 1] - hull[:, 0]
        side_c = ex[:, 0] * (centre[1] - hull[:, 0, 1]) - ex[:, 1] * (centre[0] - hull[:, 0, 0])
        pts = targets[unknown]
        side = (ex[None, :, 0] * (pts[:, None, 1] - hull[None, :, 0, 1])
                - ex[None, :, 1] * (pts[:, None, 0] - hull[None, :, 0, 0]))
        outside = np.any(side * side_c[None] < 0, axis=1)
        rest = unknown[~outside]
        if rest.size:
            out[rest] = tri.find_simplex(targets[rest])
    return out


def find_simplices(tri: Delaunay, targets: np.ndarray, near: np.ndarray, tree: cKDTree,
                   trans: np.ndarray | None = None, max_steps: int = 64) -> np.ndarray:
    """The simplex of ``tri`` holding each target point (-1 outside the triangulation).

    The answer of ``tri.find_simplex(targets)`` (up to the choice between two simplices for a
    point on their common edge, where both interpolate alike), found faster: every target starts
    from a simplex at its nearest point ``near`` (indices into ``tri.points``) and walks, all
    targets at once, towards the neighbour opposite its most negative barycentric coordinate;
    a walk that leaves the triangulation through a hull edge ends outside (a Delaunay triangulation
    is convex). Targets whose walk meets a degenerate simplex or does not end are searched among
    the simplices around their nearest points.

    Parameters
    ----------
    tri : scipy.spatial.Delaunay, 2-D
    targets : ndarray, shape (n, 2)
    near : ndarray of int, shape (n,)
    tree : cKDTree of ``tri.points``
    trans : ndarray, optional
        :func:`barycentric_transforms` of ``tri``.
    """
    trans = barycentric_transforms(tri) if trans is None else trans
    out = np.full(len(targets), -1, dtype=np.intp)
    start = tri.vertex_to_simplex[near]
    todo = np.flatnonzero(start >= 0)
    slow = [np.flatnonzero(start < 0)]  # points qhull left out of the triangulation (duplicates)
    s = start[todo]
    for _ in range(max_steps):
        if todo.size == 0:
            break
        c = _coordinates(trans[s], targets[todo])
        k = np.argmin(c, axis=1)
        cmin = c[np.arange(len(k)), k]
        degenerate = ~np.isfinite(cmin)
        found = ~degenerate & (cmin >= -_EPS)
        degenerate |= found & (c.max(axis=1) > 1.0 + _EPS)
        found &= ~degenerate
        out[todo[found]] = s[found]
        slow.append(todo[degenerate])
        nxt = tri.neighbors[s, k]
        go = ~found & ~degenerate & (nxt >= 0)  # nxt < 0: beyond a hull edge, outside
        todo, s = todo[go], nxt[go]
    slow.append(todo)
    rest = np.concatenate(slow)
    if rest.size:
        out[rest] = _search_near(tri, trans, targets[rest], tree)
    return out



# --------------------------------------------------------------------------- bands of grid rows
#: a band holds about this many grid points' worth of measured points (its triangulation: ~80 MB)
BAND_POINTS = 1 << 17
#: first margin of measured points around a band, in grid steps of the slow axis (doubled as needed)
_MARGIN = 3.0
#: points per chunk of the slow-coordinate summary that selects a band's points without sorting
_CHUNK = 1 << 12
#: slack of the checks that a band's answer is the map's (grid steps): errs towards a wider margin
_TOL = 1e-9


@dataclass
class Geometry:
    """Where each grid point (row-major, ``rows * cols``) takes its value from.

    ``method`` ``nearest``: ``src`` ``(n,)`` indices of the points. ``linear``: ``vertices``
    ``(3, n)`` indices and ``weights`` ``(3, n)`` barycentric coordinates; a grid point outside the
    convex hull has its nearest point three times, weights ``(1, 0, 0)``.
    """

    method: str
    src: np.ndarray | None = None
    vertices: np.ndarray | None = None
    weights: np.ndarray | None = None
    bands: int = 1
    widened: int = 0


class _Points:
    """The usable points (flat, unscaled ``y``, ``x`` and mask ``ok``), scaled by ``dy``, ``dx`` on
    selection, with the range of the scaled slow coordinate in each chunk of ``_CHUNK`` points."""

    def __init__(self, y: np.ndarray, x: np.ndarray, ok: np.ndarray, dy: float, dx: float):
        self.y, self.x, self.ok, self.dy, self.dx = y, x, ok, dy, dx
        nchunks = -(-y.size // _CHUNK)
        self.lo, self.hi = np.full(nchunks, np.inf), np.full(nchunks, -np.inf)
        xlo, xhi = np.inf, -np.inf
        self.count = 0
        for i in range(nchunks):
            s = slice(i * _CHUNK, (i + 1) * _CHUNK)
            m = ok[s]
            if m.any():
                yy, xx = y[s][m] / dy, x[s][m] / dx
                self.lo[i], self.hi[i] = yy.min(), yy.max()
                xlo, xhi = min(xlo, xx.min()), max(xhi, xx.max())
                self.count += int(m.sum())
        self.ymin, self.ymax = float(self.lo.min()), float(self.hi.max())
        self.xmin, self.xmax = xlo, xhi

    def select(self, lo: float, hi: float) -> np.ndarray:
        """Flat indices (ascending) of the usable points whose scaled slow coordinate is in [lo, hi]."""
        parts = []
        for i in np.flatnonzero((self.hi >= lo) & (self.lo <= hi)):
            s = i * _CHUNK
            yy = self.y[s:s + _CHUNK] / self.dy
            parts.append(np.flatnonzero(self.ok[s:s + _CHUNK] & (yy >= lo) & (yy <= hi)) + s)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.intp)

    def coords(self, sel: np.ndarray) -> np.ndarray:
        return np.column_stack([self.y[sel] / self.dy, self.x[sel] / self.dx])


def _hull_equations(pts: _Points, chunk: int) -> np.ndarray | None:
    """Facets ``(n, 3)`` of the usable points' convex hull (``normal . p + offset <= 0`` inside),
    from the hulls of chunks of ``chunk`` points; None when the points are collinear."""
    keep = []
    for s in range(0, pts.y.size, chunk):
        idx = np.flatnonzero(pts.ok[s:s + chunk]) + s
        if idx.size == 0:
            continue
        c = pts.coords(idx)
        try:
            keep.append(c[ConvexHull(c).vertices])
        except (QhullError, ValueError):  # collinear or too few: the extreme points span them
            keep.append(c[np.unique([c[:, 0].argmin(), c[:, 0].argmax(), c[:, 1].argmin(), c[:, 1].argmax()])])
    try:
        return ConvexHull(np.concatenate(keep)).equations
    except (QhullError, ValueError):
        return None


def _circles_within(tri: Delaunay, simplices: np.ndarray, lo: float, hi: float, pts: _Points) -> bool:
    """True when no usable point with slow coordinate beyond ``lo`` or ``hi`` is inside the
    circumcircle of any of ``simplices``.

    Points lie within the map's bounding box, so a circle clipped to the box's fast range and
    staying within ``lo < y < hi`` holds none. The few that do not (slivers along the map's left
    and right hull edges have huge circles) are checked against the points beyond the margin they
    reach; when there are many, or they reach far, the answer is False (widen the margin).
    """
    p = tri.points[tri.simplices[simplices]]
    a, b, c = p[:, 0], p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = 2.0 * (b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0])
        b2, c2 = (b * b).sum(axis=1), (c * c).sum(axis=1)
        uy = (c[:, 1] * b2 - b[:, 1] * c2) / d
        ux = (b[:, 0] * c2 - c[:, 0] * b2) / d
        r = np.hypot(uy, ux)
        cy, cx = a[:, 0] + uy, a[:, 1] + ux
        off = np.maximum(np.maximum(pts.xmin - cx, cx - pts.xmax), 0.0)
        h = np.sqrt(np.maximum(r * r - off * off, 0.0))
        tol = _TOL * (1.0 + r)
        bad = ~((cy - h >= lo + tol) & (cy + h <= hi - tol))
    bad = np.flatnonzero(bad)
    if bad.size == 0:
        return True
    if bad.size > 64 or not np.all(np.isfinite(r[bad])):
        return False
    reach = np.maximum(lo - (cy[bad] - h[bad]), (cy[bad] + h[bad]) - hi)
    if np.any(reach > 4.0 * (hi - lo)):
        return False
    for k in bad:  # the points beyond the margin within reach of this circle
        parts = [pts.select(cy[k] - h[k] - 1.0, lo), pts.select(hi, cy[k] + h[k] + 1.0)]
        q = pts.coords(np.concatenate(parts))
        q = q[(q[:, 0] < lo) | (q[:, 0] > hi)]
        if np.any(((q[:, 0] - cy[k]) ** 2 + (q[:, 1] - cx[k]) ** 2) < r[k] ** 2 * (1.0 - _TOL) - _TOL):
            return False
    return True


def _solve_band(pts: _Points, targets: np.ndarray, lo: float, hi: float, method: str,
                hull: np.ndarray | None) -> tuple[np.ndarray, ...] | None:
    """The band's answer from the points with slow coordinate in [lo, hi] (infinite: no point
    beyond), or None when it cannot be shown to be the map's (the margin is too narrow).

    Returns ``(src, dist)`` for ``nearest``, ``(vertices, weights)`` for ``linear``.
    """
    sel = pts.select(lo, hi)
    full = np.isinf(lo) and np.isinf(hi)
    if sel.size < (3 if method == "linear" else 1) and not full:
        return None  # (every point: qhull says why it cannot triangulate them)
    coords = pts.coords(sel)
    tree = cKDTree(coords)
    dist, near = tree.query(targets)
    ty = targets[:, 0]
    if np.any(dist > np.minimum(ty - lo, hi - ty) - _TOL):  # a point beyond the margin may be nearer
        return None
    if method == "nearest":
        return sel[near], dist
    try:
        tri = Delaunay(coords)
    except QhullError:
        if full:
            raise
        return None
    trans = barycentric_transforms(tri)
    simplex = find_simplices(tri, targets, near, tree, trans)
    del tree
    inside = simplex >= 0
    s = simplex[inside]
    if not full:
        if not _circles_within(tri, np.unique(s), lo, hi, pts):
            return None  # a triangle may not be the map's
        out = targets[~inside]
        if out.size and hull is not None:
            for k in range(0, len(out), 4096):
                if np.any((out[k:k + 4096] @ hull[:, :2].T + hull[:, 2]).max(axis=1) < -_TOL):
                    return None  # inside the map's hull, outside the band's
    vertices = np.repeat(sel[near][None], 3, axis=0)
    weights = np.zeros((3, len(targets)))
    weights[0] = 1.0
    vertices[:, inside] = sel[tri.simplices[s]].T
    weights[:, inside] = _coordinates(trans[s], targets[inside]).T
    return vertices, weights


def banded_geometry(y: np.ndarray, x: np.ndarray, ok: np.ndarray, dy: float, dx: float, slow: np.ndarray,
                    fast: np.ndarray, method: str, band_rows: int | None = None,
                    band_points: int = BAND_POINTS) -> Geometry:
    """``nearest`` or ``linear`` regridding geometry of scattered points onto the grid ``slow x fast``,
    computed one band of grid rows at a time (module docstring): equal to that of one triangulation
    of all points.

    Parameters
    ----------
    y, x : ndarray, shape (npoints,)
        Slow and fast positions (flat, any order; time-triggered scans in time order, snake scans
        row by row keep the bands' point selection fast).
    ok : ndarray of bool, shape (npoints,)
        The points to use (finite positions and values).
    dy, dx : float
        Grid steps: coordinates are scaled to them, so ``nearest`` means nearest in pixels.
    slow, fast : ndarray, shape (rows,), (cols,)
        The target axes (unscaled).
    method : {"nearest", "linear"}
        ``linear`` gives ``nearest`` when every grid point coincides with a measured point
        (within 1e-9 steps), where interpolation would return the point's value.
    band_rows : int, optional
        Grid rows per band; default such that a band holds about ``band_points`` measured points.

    Returns
    -------
    Geometry
        Indices are into the flat points, int32 when they fit (3 indices + 3 float64 weights =
        36 bytes per grid point for ``linear``, 4 for ``nearest``).
    """
    pts = _Points(y, x, ok, dy, dx)
    gy, gx = np.asarray(slow, dtype=np.float64) / dy, np.asarray(fast, dtype=np.float64) / dx
    rows, cols = len(gy), len(gx)
    if band_rows is None:
        band_rows = max(1, int(band_points * rows // max(1, pts.count)))
    bands = [(a, min(a + band_rows, rows)) for a in range(0, rows, band_rows)]
    chunk = max(1024, int(band_rows * pts.count // rows))  # points of a band, about
    hull = _hull_equations(pts, chunk) if len(bands) > 1 and method == "linear" else None
    itype = np.int32 if y.size < np.iinfo(np.int32).max else np.intp
    n = rows * cols
    geo = Geometry(method, bands=len(bands))

    def solve(a: int, b: int, how: str) -> tuple[np.ndarray, ...]:
        targets = np.column_stack([np.repeat(gy[a:b], cols), np.tile(gx, b - a)])
        if len(bands) == 1:
            return _solve_band(pts, targets, -np.inf, np.inf, how, hull)
        tlo, thi = gy[a:b].min(), gy[a:b].max()
        margin = _MARGIN
        while True:
            lo, hi = tlo - margin, thi + margin
            lo, hi = (-np.inf if lo <= pts.ymin else lo), (np.inf if hi >= pts.ymax else hi)
            res = _solve_band(pts, targets, lo, hi, how, hull)
            if res is not None:
                return res
            if np.isinf(lo) and np.isinf(hi):  # not reached: with every point nothing is checked
                raise RuntimeError(f"grid rows {a}-{b}: regridding failed with every point")
            geo.widened += 1
            margin *= 2.0
            log.debug("regridding band of grid rows %d-%d: margin widened to %g steps", a, b, margin)

    coincide = method == "linear"  # until a grid point is found that no point coincides with
    pending: list[tuple[int, int, np.ndarray]] = []  # bands of coinciding points, with their sources
    for a, b in bands:
        if method == "nearest" or coincide:
            near, dist = solve(a, b, "nearest")
            if method == "nearest" or np.all(dist <= _COINCIDE):
                pending.append((a, b, near.astype(itype)))
                continue
            coincide = False
            geo.vertices, geo.weights = np.empty((3, n), dtype=itype), np.empty((3, n))
            for pa, pb, _ in pending:
                geo.vertices[:, pa * cols:pb * cols], geo.weights[:, pa * cols:pb * cols] = solve(pa, pb, "linear")
            pending = []
        geo.vertices[:, a * cols:b * cols], geo.weights[:, a * cols:b * cols] = solve(a, b, "linear")
    if method == "nearest" or coincide:
        geo.method, geo.src = "nearest", np.concatenate([p[2] for p in pending])
    if geo.widened:
        log.info("regridding in %d bands: margins widened %d times (holes, irregular rows)", len(bands), geo.widened)
    return geo
