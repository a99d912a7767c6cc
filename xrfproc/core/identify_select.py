"""Penalised forward / backward selection of element families for :mod:`xrfproc.core.identify`.

Every fit is a weighted NNLS of the fixed columns (scatter, continuum bumps, pile-up) and the
families of a set of elements. All columns of the pass live in one :class:`Design`; for the
current weights its normal equations (Gram matrix ``G``, ``h``) are formed once, so a fit of any
subset is a small active-set solve (warm-started from the previous one), and the chi-square gain
a candidate's projection promises comes from ``G`` too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .identify_model import Ctx, lines, nnls_gram

log = logging.getLogger(__name__)

#: elements whose K lines are commonly seen (rock, soil, biology, alloys, air); other K readings pay more
COMMON_K = frozenset("Na Mg Al Si P S Cl Ar K Ca Ti V Cr Mn Fe Co Ni Cu Zn As Se Br Rb Sr Y Zr Nb Mo".split())
#: elements whose L lines are commonly seen
COMMON_L = frozenset("Mo Ru Rh Pd Ag Cd Sn Sb Te I Cs Ba La Ce Nd W Re Os Ir Pt Au Hg Tl Pb Bi Th U".split())
#: elements whose M lines are commonly seen
COMMON_M = frozenset("W Pt Au Hg Pb Bi Th U".split())


def penalty(sym: str, reading: str, k_min: float, k_excited: bool = True) -> float:
    """Chi-square penalty of an element read by its ``reading`` family; an L reading of an element whose
    K lines are not excited (or out of the window) is its natural one and pays as a K reading does."""
    if reading == "L" and not k_excited and sym in COMMON_L:
        return k_min * k_min
    if reading == "K":
        k = k_min if sym in COMMON_K else k_min + 1.5
    elif reading == "L":
        k = k_min + 1.0 if sym in COMMON_L else k_min + 6.0
    else:
        k = k_min + 3.0 if sym in COMMON_M else k_min + 6.0
    return k * k


@dataclass
class Fit:
    """One weighted NNLS fit: design columns ``idx``, their areas ``a`` (counts), chi-square."""

    idx: np.ndarray
    a: np.ndarray
    chi2: float
    design: "Design"
    _model: np.ndarray | None = None

    @property
    def model(self) -> np.ndarray:
        """Fitted net counts per window channel."""
        if self._model is None:
            act = self.a > 0
            self._model = self.a[act] @ self.design.C[self.idx[act]]
        return self._model

    def areas(self, sym: str) -> dict[str, float]:
        """Family -> area of ``sym`` in this fit (families of the design not in the fit omitted)."""
        pos = {int(j): k for k, j in enumerate(self.idx)}
        return {self.design.labels[j][1]: float(self.a[pos[j]]) for j in self.design.col[sym] if j in pos}


class Design:
    """All columns of a pass: fixed ones first (the last is the pile-up), then each candidate's families.

    Parameters
    ----------
    fixed : ndarray, shape (nfixed, nchan)
    groups : dict element -> dict family -> template (nchan,)
    b : ndarray
        Net counts of the window.
    """

    def __init__(self, fixed: np.ndarray, groups: dict[str, dict[str, np.ndarray]], b: np.ndarray):
        self.nf = len(fixed)
        rows = [fixed]
        self.labels: list[tuple[str, str]] = [("", "scatter")] * (self.nf - 1) + [("", "pile-up")]
        self.col: dict[str, list[int]] = {}
        for s, fams in groups.items():
            self.col[s] = []
            for fam, c in fams.items():
                self.col[s].append(len(self.labels))
                self.labels.append((s, fam))
                rows.append(c[None, :])
        self.C = np.concatenate(rows)
        nz = self.C != 0
        self.lo = np.argmax(nz, axis=1)
        self.hi = self.C.shape[1] - np.argmax(nz[:, ::-1], axis=1)
        self.b = b
        self.version = 0
        self.passive = np.zeros(len(self.labels), bool)
        self._cache: dict[tuple, Fit] = {}

    def set_weights(self, w: np.ndarray) -> None:
        """Channel weights ``w`` (1 / sigma): the normal equations' right-hand side and diagonal now,
        the Gram matrix's columns when a fit first needs them (:meth:`gram`)."""
        self.w = w
        self.Cw = self.C * w
        bw = self.b * w
        self.h = self.Cw @ bw
        self.gdiag = np.einsum("ij,ij->i", self.Cw, self.Cw)
        self.bb = float(bw @ bw)
        self.G = np.empty((len(self.labels), len(self.labels)))
        self._have = np.zeros(len(self.labels), bool)
        self.version += 1
        self._cache.clear()

    def gram(self, idx: np.ndarray) -> np.ndarray:
        """The Gram matrix, its rows and columns ``idx`` computed (each on the channels its column covers)."""
        for j in idx[~self._have[idx]]:
            lo, hi = self.lo[j], self.hi[j]
            g = self.Cw[:, lo:hi] @ self.Cw[j, lo:hi]
            self.G[:, j] = g
            self.G[j, :] = g
            self._have[j] = True
        return self.G

    def fit(self, idx: Sequence[int]) -> Fit:
        """Weighted NNLS of the columns ``idx`` (cached for the current weights)."""
        idx = np.asarray(sorted(idx), dtype=np.int64)
        key = tuple(idx)
        f = self._cache.get(key)
        if f is None:
            if idx.size:
                Gs = self.gram(idx)[np.ix_(idx, idx)]
                a, P = nnls_gram(Gs, self.h[idx], self.passive[idx])
                self.passive[idx] = P
                chi2 = self.bb - 2.0 * float(a @ self.h[idx]) + float(a @ Gs @ a)
            else:
                a, chi2 = np.zeros(0), self.bb
            f = self._cache[key] = Fit(idx, a, max(chi2, 0.0), self)
        return f


class Selector:
    """Penalised forward / backward selection of element column groups over fixed columns."""

    def __init__(self, ctx: Ctx, fixed: np.ndarray, groups: dict[str, dict[str, np.ndarray]], b: np.ndarray,
                 y: np.ndarray, systematic: float, k_min: float):
        self.ctx, self.groups, self.b, self.y = ctx, groups, b, y
        self.d = Design(fixed, groups, b)
        self.nf = self.d.nf
        self.var0 = np.maximum(y, 1.0)
        self.f, self.k_min = systematic, k_min
        self.d.set_weights(1.0 / np.sqrt(self.var0))
        # unweighted unit-peak sum of each element's families (overlap of readings, local scale)
        self.u = {s: sum(fams.values()) for s, fams in groups.items()}
        self.u = {s: u / u.max() for s, u in self.u.items()}
        self._line_ch: dict[str, np.ndarray] = {}

    @property
    def w(self) -> np.ndarray:
        return self.d.w

    def columns(self, members: Sequence[str]) -> list[int]:
        return list(range(self.nf)) + [j for s in members for j in self.d.col[s]]

    def fit(self, members: Sequence[str]) -> Fit:
        return self.d.fit(self.columns(members))

    def reweight(self, members: Sequence[str]) -> None:
        """Channel variance ``counts + (f model)^2`` with the model of ``members``."""
        model = self.fit(members).model
        self.d.set_weights(1.0 / np.sqrt(self.var0 + (self.f * model) ** 2))

    def reading(self, sym: str, fit: Fit) -> str:
        """The family of ``sym`` carrying most of its weighted signal."""
        best, fam_best = -1.0, "K"
        for k, j in enumerate(fit.idx):
            s, fam = self.d.labels[j]
            if s == sym:
                v = float(fit.a[k] ** 2 * self.d.gdiag[j])
                if v > best:
                    best, fam_best = v, fam
        return fam_best

    def local_scale(self, sym: str, fit: Fit) -> float:
        """Reduced chi-square of the model around ``sym``'s lines (weights: its templates), >= 1: a
        chi-square gain where the model misfits a strong neighbour counts for less."""
        u = self.u[sym]
        r2 = ((self.b - fit.model) * self.w) ** 2
        return max(1.0, float(u @ r2 / u.sum()))

    def line_channels(self, sym: str) -> np.ndarray:
        """Window channels of ``sym``'s main lines (>= 10 % of a family)."""
        if sym not in self._line_ch:
            ch = []
            for fam in self.groups[sym]:
                _, en, w = lines(sym, fam, self.ctx.energy_keV, self.ctx.emin)
                ch += [int(np.argmin(np.abs(self.ctx.e - E))) for E in en[w >= 0.1]]
            self._line_ch[sym] = np.array(ch, dtype=np.int64)
        return self._line_ch[sym]

    def dominant(self, sym: str, fit: Fit) -> bool:
        """Does ``sym`` hold >= half of the line and pile-up model at one of its main lines? A reading
        hidden under another element's peak is no evidence."""
        ch = self.line_channels(sym)
        if not ch.size:
            return False
        sub = self.d.C[:, ch]
        el = fit.idx >= self.nf - 1
        lines_model = fit.a[el] @ sub[fit.idx[el]]
        mine = np.array([self.d.labels[j][0] == sym for j in fit.idx])
        if not mine.any():
            return False
        own = fit.a[mine] @ sub[fit.idx[mine]]
        return bool(np.any((lines_model > 0) & (own >= 0.5 * lines_model)))

    def score(self, sym: str, members: Sequence[str], chi2_without: float) -> float:
        """Penalised, locally scaled chi-square gain of ``sym`` within ``members`` (which hold it)."""
        fit = self.fit(list(members))
        if not self.dominant(sym, fit):
            return -np.inf
        gain = (chi2_without - fit.chi2) / self.local_scale(sym, fit)
        return gain - penalty(sym, self.reading(sym, fit), self.k_min, "K" in self.groups[sym])

    def forward(self, members: list[str], candidates: Sequence[str], n_exact: int = 6) -> list[str]:
        rejected: set[str] = set()
        while True:
            self.reweight(members)
            fit = self.fit(members)
            proj = self.d.Cw @ ((self.b - fit.model) * self.w)   # (C w) . (weighted residual) of every column
            gd = self.d.gdiag
            scores = []
            for s in candidates:
                if s in members or s in rejected:
                    continue
                gains = {}
                for j in self.d.col[s]:
                    p = float(proj[j])
                    gains[self.d.labels[j][1]] = p * p / float(gd[j]) if p > 0 and gd[j] > 0 else 0.0
                reading = max(gains, key=gains.get)
                pen = penalty(s, reading, self.k_min, "K" in self.groups[s])
                scores.append((sum(gains.values()) - pen, pen, s))
            scores.sort(reverse=True)
            best, best_s = 0.0, None
            for sc, pen, s in scores[:n_exact]:
                if sc <= -0.5 * pen:  # the projection is only an estimate of the gain: look a little further
                    break
                gain = self.score(s, members + [s], fit.chi2)
                if gain > best:
                    best, best_s = gain, s
                elif gain <= 0:
                    rejected.add(s)
            if best_s is None:
                return members
            log.debug("forward: + %s (penalised chi2 gain %.1f)", best_s, best)
            members = members + [best_s]

    def backward(self, members: list[str]) -> list[str]:
        while members:
            self.reweight(members)
            worst, worst_s = 0.0, None
            for s in members:
                chi2_wo = self.fit([m for m in members if m != s]).chi2
                score = self.score(s, members, chi2_wo)
                if score < worst:
                    worst, worst_s = score, s
            if worst_s is None:
                return members
            log.debug("backward: - %s (penalised chi2 loss %.1f)", worst_s, worst)
            members = [m for m in members if m != worst_s]
        return members

    def swap(self, members: list[str], candidates: Sequence[str], max_score: float = 400.0) -> list[str]:
        """Replace a weakly needed member by a non-member reading the same peaks if that scores better
        (S K against Mo L at 2.3 keV: the forward order must not decide)."""
        for s in list(members):
            if s not in members:
                continue
            self.reweight(members)
            rest = [m for m in members if m != s]
            chi2_wo = self.fit(rest).chi2
            own = self.score(s, members, chi2_wo)
            if own > max_score:
                continue
            us = self.u[s]
            best, best_c = own, None
            for c in candidates:
                if c in members:
                    continue
                uc = self.u[c]
                if float(us @ uc) < 0.3 * np.sqrt(float(us @ us) * float(uc @ uc)):
                    continue
                sc = self.score(c, rest + [c], chi2_wo)
                if sc > best:
                    best, best_c = sc, c
            if best_c is not None:
                log.debug("swap: %s -> %s (%.1f -> %.1f)", s, best_c, own, best)
                members = rest + [best_c]
        return members

    def fit_extra(self, idx: Sequence[int], extra: np.ndarray, free: bool | np.ndarray = False,
                  ridge: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
        """NNLS of design columns ``idx`` and ``extra`` columns (nextra, nchan), these ``free`` of the
        bound if asked and with a Gaussian prior ``ridge`` (1 / sigma^2 of each coefficient).

        Returns
        -------
        a : ndarray
            Coefficients, design columns first.
        chi2 : float
            Weighted chi-square plus the prior's.
        G : ndarray
            The normal matrix (prior included).
        """
        idx = np.asarray(idx, dtype=np.int64)
        nz = np.flatnonzero(np.any(extra != 0, axis=0))
        win = slice(int(nz[0]), int(nz[-1]) + 1) if nz.size else slice(0, 0)
        w, bw = self.w[win], self.b[win] * self.w[win]
        Ew = extra[:, win] * w
        Gbe = self.d.Cw[idx, win] @ Ew.T
        G = np.block([[self.d.gram(idx)[np.ix_(idx, idx)], Gbe], [Gbe.T, Ew @ Ew.T]])
        if ridge is not None:
            G[np.arange(idx.size, G.shape[0]), np.arange(idx.size, G.shape[0])] += ridge
        h = np.concatenate([self.d.h[idx], Ew @ bw])
        fr = np.zeros(h.size, bool)
        fr[idx.size:] = free
        a, _ = nnls_gram(G, h, np.concatenate([self.d.passive[idx], np.ones(len(extra), bool)]), fr)
        chi2 = self.d.bb - 2.0 * float(a @ h) + float(a @ G @ a)
        return a, max(chi2, 0.0), G

    def select(self, candidates: Sequence[str]) -> list[str]:
        # first the elements read at the lowest penalty: K lines of common elements, L lines of common
        # heavy elements whose K lines are not excited
        tier1 = [s for s in candidates if (s in COMMON_K and "K" in self.groups[s])
                 or (s in COMMON_L and "K" not in self.groups[s] and "L" in self.groups[s])]
        members = self.forward([], tier1)
        members = self.forward(members, list(candidates))
        return self.backward(self.swap(self.backward(members), candidates))
