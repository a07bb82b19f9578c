"""Posterior over "which node introduced the failure" (spec/flake-aware-bisection.md §3-§5.1).

Candidates with the same evidence signature share a likelihood, so the posterior is kept per
*segment* of the candidate linearisation rather than per node: a run at x only separates the
candidates that are ancestors of x from the others, and for a culprit hypothesis only the counts
(fails, passes) at observed descendants matter. A step therefore costs O(K log K + S·G) for K
observed nodes, S segments and G grid points, whatever N is. Pbad(x) is the posterior mass of an
interval set over the linearisation, read off a cumulative table.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pushgate.bisect.graph import GraphError, Node, RevGraph

Result = Literal["pass", "fail", "broken"]
Kind = Literal["probe", "trigger", "history"]


@dataclass(frozen=True)
class Observation:
    """One run of the bisected step at a tuple, in flight order.

    kind: `trigger` is the failure that reported the regression (its prior already conditions on
    it, §3: no likelihood term); `history` runs pre-date the bisection (evidence, no budget);
    `probe` runs were made by the bisection (evidence and budget).
    """

    node: Node
    result: Result
    host: str = "h0"
    kind: Kind = "probe"
    # A `broken` probe whose build failed (a compile failure, not the infrastructure): the node
    # is untestable at once, as git bisect's exit 125 (§4.4); nothing would build it next time.
    build_failed: bool = False


# ---------------------------------------------------------------- flake rate (§4.2)


def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction for the regularised incomplete beta (Lentz's method).
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbt + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# Levels of the f grid. The bisection's own runs move the posterior along them, so a test whose
# history says 0.02 but which fails at good nodes during the search is read at 0.2 or 0.3.
F_LEVELS = (0.003, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class FlakeGrid:
    """Prior over the step's flake rate f: grid points and their weights.

    conf is the lowest f_conf the confirmation count may use (§6); the count itself is sized
    from the posterior's 90th percentile of f, which the bisection's runs can only raise above
    it. history is the number of known-good runs behind the estimate."""

    points: tuple[float, ...]
    weights: tuple[float, ...]
    conf: float
    too_flaky: bool
    history: int = 0
    proven: bool = False  # history proves the step (nearly) deterministic: f_conf < f_min


def flake_grid(
    passes: float,
    fails: float,
    *,
    parent_rate: float = 0.02,
    strength: float = 10.0,
    f_min: float = 0.1,
    f_max: float = 0.5,
    history_min: int = 20,
    robust: float = 0.05,
    levels: Sequence[float] = F_LEVELS,
) -> FlakeGrid:
    """Prior over f from known-good runs (§4.2): the Beta(s·m + fails, s·(1 - m) + passes)
    estimate spread over the F_LEVELS grid by bin mass, plus `robust` spread evenly so that
    the bisection's contradictions can pull f up whatever history said (for a proven step,
    `robust` is the no-history grid instead: history that no longer applies).

    The floor f_min holds until the step has `history_min` known-good runs: the fleet prior
    alone is no evidence that this test is deterministic, but 20 clean runs are, and then the
    grid goes down to its lowest level (fewer confirmation pairs, §6)."""
    a = strength * parent_rate + fails
    b = strength * (1.0 - parent_rate) + passes
    proven = passes + fails >= history_min
    floor = levels[0] if proven else f_min
    pts = [x for x in levels if floor <= x <= f_max]
    if not pts or pts[0] > floor:
        pts.insert(0, floor)
    # Bin j takes f between the geometric means of its neighbours; the ends take the tails.
    edges = [0.0] + [math.sqrt(x * y) for x, y in zip(pts, pts[1:], strict=False)] + [1.0]
    cdf = [beta_cdf(e, a, b) for e in edges]
    mass = [max(0.0, hi - lo) for lo, hi in zip(cdf, cdf[1:], strict=False)]
    tot = sum(mass) or 1.0
    if proven and robust > 0:
        # The hedge against history that no longer applies (the rate drifted, the history was
        # mislabelled): with probability `robust` the step is one with no history, i.e. the
        # no-history grid (floor f_min, its own even spread). Spreading it evenly over the whole
        # grid instead put 2.5% of the prior on f >= 0.3 after 20 clean runs, whose likelihood
        # is below 1e-3: every flaky-fail hypothesis then kept enough mass to cost a clean
        # bisection one to two runs more than ceil(log2 N) + 4 (bench/bisect_sim.py).
        fresh = flake_grid(
            0,
            0,
            parent_rate=parent_rate,
            strength=strength,
            f_min=f_min,
            f_max=f_max,
            history_min=history_min,
            robust=robust,
            levels=levels,
        )
        fw = dict(zip(fresh.points, fresh.weights, strict=True))
        w = [
            (1.0 - robust) * m / tot + robust * fw.get(x, 0.0)
            for m, x in zip(mass, pts, strict=True)
        ]
    else:
        w = [(1.0 - robust) * m / tot + robust / len(pts) for m in mass]
    p10, p90 = beta_ppf(0.1, a, b), beta_ppf(0.9, a, b)
    conf = max(floor, min(p90, f_max))
    return FlakeGrid(
        tuple(pts), tuple(w), conf, p10 > f_max, int(passes + fails), proven and conf < f_min
    )


def learned_priors(
    flakes: int,
    envs: int,
    total: int,
    strength: float = 10.0,
    flake_default: float = 0.4,
    env_default: float = 0.02,
) -> tuple[float, float]:
    """(pi_flake, pi_env): Beta-smoothed shares of the step's past bisection outcomes (§3)."""
    return (
        (strength * flake_default + flakes) / (strength + total),
        (strength * env_default + envs) / (strength + total),
    )


def fixed_grid(f: float) -> FlakeGrid:
    return FlakeGrid((f,), (1.0,), f, False)


# ---------------------------------------------------------------- candidate index


@dataclass
class Index:
    """Candidates V* in lin order with ancestor sets as intervals over that order."""

    graph: RevGraph
    basis: Node
    latest: Node
    cands: list[Node]
    pos: dict[Node, int]
    anc: dict[Node, list[tuple[int, int]]]  # per relevant node, ancestors within V*
    is_chain: bool
    weights_prefix: list[float] = field(default_factory=list)
    rel_parents: dict[Node, tuple[Node, ...]] = field(default_factory=dict)  # within V
    anc_size: dict[Node, int] = field(default_factory=dict)  # |anc(x) ∩ V*|


def build_index(graph: RevGraph, basis: Node, latest: Node) -> Index:
    key = ("bisect-index", basis, latest)
    hit = graph.cache.get(key)
    if isinstance(hit, Index):
        return hit
    cands = graph.candidates(basis, latest)
    pos = {n: i for i, n in enumerate(cands)}
    anc: dict[Node, list[tuple[int, int]]] = {basis: []}
    is_chain = True
    rel_parents: dict[Node, tuple[Node, ...]] = {}
    for i, n in enumerate(cands):
        ps = [p for p in graph.parents(n) if p in pos or p == basis]
        rel_parents[n] = tuple(ps)
        if len(ps) != 1 or (ps[0] != basis and pos[ps[0]] != i - 1) or (i == 0) != (ps[0] == basis):
            is_chain = False
        if is_chain:
            anc[n] = [(0, i)]
        else:
            anc[n] = _union([(i, i)] + [iv for p in ps for iv in anc[p]])
    if not cands:
        raise GraphError("no candidate nodes between basis and latest")
    idx = Index(graph, basis, latest, cands, pos, anc, is_chain)
    idx.weights_prefix = [float(i) for i in range(len(cands) + 1)]
    idx.rel_parents = rel_parents
    idx.anc_size = {n: sum(b - a + 1 for a, b in ivs) for n, ivs in anc.items()}
    graph.cache[key] = idx
    return idx


def _union(ivs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ivs):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


# ---------------------------------------------------------------- posterior


def _term(n: int, logp: float) -> float:
    return 0.0 if n == 0 else n * logp


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


@dataclass
class Posterior:
    """Marginal posterior: flake, env, and culprit mass per segment of lin."""

    idx: Index
    p_flake: float
    p_env: float
    seg_start: list[int]  # segment i covers positions [seg_start[i], seg_start[i+1])
    seg_mass: list[float]
    seg_cum: list[float]  # mass before segment i
    eps_mean: float
    f_mean: float
    wprefix: list[float]  # prefix sums of the prior weights w(c) over lin
    uniform: bool = True
    f_marg: tuple[tuple[float, float], ...] = ()  # (f, posterior weight), f ascending

    def f_quantile(self, q: float) -> float:
        """The smallest grid f whose posterior CDF reaches q (an upper, conservative read)."""
        acc = 0.0
        for f, w in self.f_marg:
            acc += w
            if acc >= q - 1e-12:
                return f
        return self.f_marg[-1][0] if self.f_marg else self.f_mean

    def mass_range(self, a: int, b: int) -> float:
        """Culprit mass of positions a..b inclusive."""
        return self._cum(b + 1) - self._cum(a)

    def _cum(self, p: int) -> float:
        if p <= 0:
            return 0.0
        i = bisect.bisect_right(self.seg_start, p - 1) - 1
        start = self.seg_start[i]
        end = self.seg_start[i + 1]
        w = self.wprefix
        span = w[end] - w[start]
        frac = (w[p] - w[start]) / span if span > 0 else 0.0
        return self.seg_cum[i] + self.seg_mass[i] * frac

    def node_mass(self, node: Node) -> float:
        p = self.idx.pos[node]
        return self.mass_range(p, p)

    def pbad(self, node: Node) -> float:
        """Mass predicting a true failure at node: culprits at or before it, plus env."""
        return sum(self.mass_range(a, b) for a, b in self.idx.anc[node]) + self.p_env

    def all_pbad(self) -> dict[Node, float]:
        """Pbad of every candidate in one topological pass: a node with a single relevant
        parent adds its own mass to the parent's (disjoint sets); only merges use intervals."""
        out: dict[Node, float] = {}
        idx = self.idx
        cum = [self._cum(p) for p in range(len(idx.cands) + 1)]
        for i, node in enumerate(idx.cands):
            ps = idx.rel_parents[node]
            own = cum[i + 1] - cum[i]
            if len(ps) == 1:
                base = self.p_env if ps[0] == idx.basis else out[ps[0]]
                out[node] = base + own
            else:
                out[node] = self.p_env + sum(cum[b + 1] - cum[a] for a, b in idx.anc[node])
        return out

    def top_candidate(self) -> tuple[Node, float]:
        if not self.uniform:
            best = max(self.idx.cands, key=self.node_mass)
            return best, self.node_mass(best)
        # With uniform weights the best node opens the segment with the highest density.
        w = self.wprefix
        best_i = max(
            range(len(self.seg_mass)),
            key=lambda i: (
                self.seg_mass[i] / max(w[self.seg_start[i + 1]] - w[self.seg_start[i]], 1e-300)
            ),
        )
        p = self.seg_start[best_i]
        node = self.idx.cands[p]
        return node, self.node_mass(node)


def node_counts(
    idx: Index, observations: Iterable[Observation]
) -> tuple[dict[Node, list[int]], int, int]:
    """Per relevant node [fails, passes] over evidence runs (trigger and broken excluded)."""
    counts: dict[Node, list[int]] = {}
    ftot = ptot = 0
    for o in observations:
        if o.kind == "trigger" or o.result == "broken":
            continue
        if o.node != idx.basis and o.node not in idx.pos:
            continue  # irrelevant tuple: not evidence (osstest skips it too)
        c = counts.setdefault(o.node, [0, 0])
        if o.result == "fail":
            c[0] += 1
            ftot += 1
        else:
            c[1] += 1
            ptot += 1
    return counts, ftot, ptot


def compute_posterior(
    idx: Index,
    observations: Sequence[Observation],
    fgrid: FlakeGrid,
    eps_grid: Sequence[float],
    eps_weights: Sequence[float],
    pi_flake: float,
    pi_env: float,
    weights: Mapping[Node, float] | None = None,
) -> Posterior:
    """weights: optional prior weights w(c) (default 1; §3 options such as 0 for trees the job
    does not consume)."""
    counts, ftot, ptot = node_counts(idx, observations)
    n = len(idx.cands)
    # Sweep: the (fails, passes) at descendants of a candidate change only at interval ends.
    events: dict[int, list[int]] = {}
    for node, (fc, pc) in counts.items():
        for a, b in idx.anc[node]:
            ev = events.setdefault(a, [0, 0])
            ev[0] += fc
            ev[1] += pc
            if b + 1 < n:
                ev = events.setdefault(b + 1, [0, 0])
                ev[0] -= fc
                ev[1] -= pc
    starts = sorted(set(events) | {0})
    seg_fp: list[tuple[int, int]] = []
    fs = ps = 0
    for s in starts:
        delta = events.get(s)
        if delta:
            fs += delta[0]
            ps += delta[1]
        seg_fp.append((fs, ps))
    starts.append(n)
    w = idx.weights_prefix
    if weights is not None:
        w = [0.0]
        for c in idx.cands:
            w.append(w[-1] + max(0.0, float(weights.get(c, 1.0))))
    wtot = w[n]
    if wtot <= 0:
        raise ValueError("prior weights are all zero")
    seg_w = [w[starts[i + 1]] - w[starts[i]] for i in range(len(seg_fp))]
    log_cul = _log(max(0.0, 1.0 - pi_flake - pi_env))
    # Joint log weights per (hypothesis, grid point); grid points where the test cannot tell good
    # from bad (1 - eps - f < 0.3) are dropped (§4.3).
    grid: list[tuple[float, float, float]] = []
    for fj, aj in zip(fgrid.points, fgrid.weights, strict=True):
        for ek, bk in zip(eps_grid, eps_weights, strict=True):
            if 1.0 - ek - fj >= 0.3 and aj > 0 and bk > 0:
                grid.append((fj, ek, math.log(aj) + math.log(bk)))
    if not grid:
        raise ValueError("empty f x eps grid")
    rows: list[list[float]] = []  # rows[g] = [flake, env, seg0, seg1, ...]
    for fj, ek, lw in grid:
        lf, l1f, le, l1e = _log(fj), _log(1 - fj), _log(ek), _log(1 - ek)
        good_all = _term(ftot, lf) + _term(ptot, l1f)
        row = [
            lw + _log(pi_flake) + good_all,
            lw + _log(pi_env) + _term(ftot, l1e) + _term(ptot, le),
        ]
        for (sf, sp), sw in zip(seg_fp, seg_w, strict=True):
            if sw <= 0:
                row.append(-math.inf)
                continue
            ll = _term(sf, l1e) + _term(sp, le) + _term(ftot - sf, lf) + _term(ptot - sp, l1f)
            row.append(lw + log_cul + math.log(sw / wtot) + ll)
        rows.append(row)
    top = max(max(r) for r in rows)
    if top == -math.inf:
        raise ValueError("observations are impossible under every hypothesis")
    marg = [0.0] * len(rows[0])
    eps_acc = f_acc = 0.0
    f_w: dict[float, float] = {}
    for (fj, ek, _), row in zip(grid, rows, strict=True):
        g_acc = 0.0
        for i, v in enumerate(row):
            if v != -math.inf:
                e = math.exp(v - top)
                marg[i] += e
                g_acc += e
        eps_acc += g_acc * ek
        f_acc += g_acc * fj
        f_w[fj] = f_w.get(fj, 0.0) + g_acc
    z = sum(marg)
    marg = [m / z for m in marg]
    seg_mass = marg[2:]
    cum = [0.0]
    for m in seg_mass[:-1]:
        cum.append(cum[-1] + m)
    f_marg = tuple((f, v / z) for f, v in sorted(f_w.items()))
    return Posterior(
        idx,
        marg[0],
        marg[1],
        starts,
        seg_mass,
        cum,
        eps_acc / z,
        f_acc / z,
        w,
        weights is None,
        f_marg,
    )
