"""Flake-aware Bayesian bisection as a stateless step (spec/flake-aware-bisection.md §5-§7, §10).

`step()` takes the graph, the endpoints and every run so far (in flight order) and returns either
a final `Outcome` or the `Probes` to run next. It keeps no state between calls, so the real
bisector only has to persist observations (flight results) and can crash at any point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from pushgate.bisect.graph import GraphError, Node, RevGraph
from pushgate.bisect.posterior import (
    FlakeGrid,
    Index,
    Observation,
    Posterior,
    build_index,
    compute_posterior,
    fixed_grid,
    node_counts,
)

OutcomeKind = Literal[
    "complete", "inconclusive", "inconsistent", "unreproducible", "flake", "doubtful"
]
EXIT_CODES: dict[str, int] = {
    "running": 0,
    "complete": 4,
    "inconclusive": 8,
    "inconsistent": 12,
    "unreproducible": 16,
    "flake": 20,
    "doubtful": 32,
}


@dataclass(frozen=True)
class SearchParams:
    """Defaults from the design's parameter table (§2)."""

    fgrid: FlakeGrid = field(default_factory=lambda: fixed_grid(0.1))
    tau: float = 0.999
    tau_culprit: float = 0.999  # the spec's tau; a separate knob for the benchmark
    confirm_c: float = 0.999
    # osstest's 3 pairs is what the formula gives at the floor f = 0.1; a history that proves
    # the step deterministic (f_conf <= 0.03) needs only 2 for C = 0.999 (§6).
    confirm_min: int = 2
    # Stop as inconclusive once this much mass sits on culprits that can never be confirmed
    # (the node or one of its parents cannot be built or run, §4.4). 0.9 cost one run more
    # than ceil(log2 N) + 4 at N >= 512 at the f floor (two runs per factor ~10 of odds); 0.8
    # still holds the culprit and its parent in the credible set in every simulated case, and
    # a culprit whose grandparent does not build is still named (bench/bisect_sim.py).
    tau_untestable: float = 0.8
    max_contradictions: int = 2  # more with p(H_c) >= tau after each -> inconsistent (§6)
    eps_grid: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2)
    eps_weights: tuple[float, ...] = (0.7, 0.15, 0.1, 0.05)
    pi_flake: float = 0.4
    pi_env: float = 0.02
    rho_latest: float = 0.2
    endpoint_repro: int = 2
    # A step whose history proves it deterministic has passed at and before the basis many
    # times: the basis is not run again before the search (the latest still is, first, while
    # P(flake) >= rho_latest), and false passes after the culprit get less prior weight.
    endpoint_repro_proven: int = 1
    eps_weights_proven: tuple[float, ...] | None = (0.95, 0.03, 0.015, 0.005)
    max_runs: int | None = None  # None: ceil(budget_log_factor*log2(N+1)) + 2n + 8
    budget_log_factor: float = 4.0
    strict_host: str | None = None  # h*: in strict mode only its runs are evidence
    tie: float = 0.02
    fit_alpha: float = 0.001
    untestable_after_broken: int = 2
    prior_weights: Mapping[Node, float] | None = None  # w(c); None: uniform over V*
    align_from: float = 0.5  # top posterior from which local probes follow the repro order

    def eps_prior(self) -> tuple[float, ...]:
        """Prior weights of eps_grid: eps_weights_proven for a step whose history proves it
        deterministic (a test that never fails falsely is seldom intermittent when broken;
        bench/bisect_sim.py shows the cost of the default tail on such steps)."""
        w = self.eps_weights_proven
        if self.fgrid.proven and w is not None and len(w) == len(self.eps_grid):
            return w
        return self.eps_weights


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    culprit: Node | None
    confidence: float
    runs: int
    p_flake: float = 0.0
    p_env: float = 0.0
    reason: str = ""
    credible: tuple[Node, ...] = ()
    f_mean: float = 0.0  # posterior means, for the report's Evidence line
    eps_mean: float = 0.0
    max_runs: int = 0  # the run budget at this step (it grows with the posterior's f)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]


@dataclass(frozen=True)
class Probes:
    nodes: tuple[Node, ...]
    phase: str  # endpoint | search | confirm
    top: Node | None = None
    p_top: float = 0.0
    p_flake: float = 0.0
    p_env: float = 0.0
    f_mean: float = 0.0
    eps_mean: float = 0.0
    max_runs: int = 0  # the run budget at this step (it grows with the posterior's f)


Decision = Outcome | Probes


class _Evidence(TypedDict):
    p_flake: float
    p_env: float
    f_mean: float
    eps_mean: float
    max_runs: int


def confirm_pairs(f_conf: float, c: float = 0.999, minimum: int = 3) -> int:
    """n = max(confirm_min, ceil(ln(1 - C) / ln(f_conf) - 1e-9)) (§6)."""
    return max(minimum, math.ceil(math.log(1.0 - c) / math.log(f_conf) - 1e-9))


def f_conf(post: Posterior | None, params: SearchParams) -> float:
    """f behind the confirmation count: the posterior's 90th percentile of f, so runs the
    bisection saw fail at good nodes raise it, never below the history's own f_conf."""
    if post is None:
        return params.fgrid.conf
    return min(0.5, max(params.fgrid.conf, post.f_quantile(0.9)))


def budget(n_cands: int, params: SearchParams, n_pairs: int | None = None) -> int:
    if params.max_runs is not None:
        return params.max_runs
    n = n_pairs
    if n is None:
        n = confirm_pairs(params.fgrid.conf, params.confirm_c, params.confirm_min)
    return math.ceil(params.budget_log_factor * math.log2(n_cands + 1)) + 2 * n + 8


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def repro_sequence(
    obs: Sequence[Observation],
    firsts: Sequence[Node],
    second: Node,
    want_first: str,
    want_second: str,
) -> tuple[int, int, list[Node]]:
    """Match osstest's alternating sequence: every `firsts` node gives `want_first`, then
    `second` gives `want_second`, repeatedly, in observation (flight) order.

    Returns (complete pairs, contrary results met after the sequence started, the nodes still
    needed for the next element). Contrary results are skipped, not fatal.
    """
    pending = set(firsts)
    pairs = contrary = 0
    started = False
    for o in obs:
        if o.result == "broken":
            continue
        if o.node in firsts:
            if o.result == want_first:
                pending.discard(o.node)
                started = True
            elif started:
                contrary += 1
        elif o.node == second:
            if o.result == want_second and not pending:
                pairs += 1
                pending = set(firsts)
            elif o.result != want_second and started:
                contrary += 1
    need = sorted(pending) if pending else [second]
    return pairs, contrary, need


def credible_set(post: Posterior, mass: float = 0.9, limit: int = 10) -> tuple[Node, ...]:
    w = post.wprefix
    order = sorted(
        range(len(post.seg_mass)),
        key=lambda i: (
            -post.seg_mass[i] / max(w[post.seg_start[i + 1]] - w[post.seg_start[i]], 1e-300)
        ),
    )
    out: list[Node] = []
    acc = 0.0
    for i in order:
        for p in range(post.seg_start[i], post.seg_start[i + 1]):
            if acc >= mass or len(out) >= limit:
                return tuple(out)
            node = post.idx.cands[p]
            out.append(node)
            acc += post.node_mass(node)
    return tuple(out)


def choose_probe(
    post: Posterior,
    t: float,
    testable: set[Node] | None,
    tie: float,
    pbad_cache: dict[Node, float],
) -> Node | None:
    """x* = argmin |Pbad(x) - t| over testable candidates; near-ties go to the lower Pbad (§5.2)."""
    idx = post.idx
    lo: tuple[float, Node] | None = None
    hi: tuple[float, Node] | None = None
    if idx.is_chain:
        # Pbad is monotone along a chain: binary search, then step over untestable nodes.
        a, b = 0, len(idx.cands)
        while a < b:
            m = (a + b) // 2
            if post.pbad(idx.cands[m]) < t:
                a = m + 1
            else:
                b = m
        i = a - 1
        while i >= 0 and testable is not None and idx.cands[i] not in testable:
            i -= 1
        if i >= 0:
            lo = (post.pbad(idx.cands[i]), idx.cands[i])
        j = a
        while j < len(idx.cands) and testable is not None and idx.cands[j] not in testable:
            j += 1
        if j < len(idx.cands):
            hi = (post.pbad(idx.cands[j]), idx.cands[j])
    else:
        if not pbad_cache:
            pbad_cache.update(post.all_pbad())
        size = idx.anc_size
        for node, pb in pbad_cache.items():
            if testable is not None and node not in testable:
                continue
            # Ties at equal Pbad: more candidate ancestors, then the older node.
            if pb < t:
                if lo is None or (pb, size[node], -idx.pos[node]) > (
                    lo[0],
                    size[lo[1]],
                    -idx.pos[lo[1]],
                ):
                    lo = (pb, node)
            elif hi is None or (pb, -size[node], idx.pos[node]) < (
                hi[0],
                -size[hi[1]],
                idx.pos[hi[1]],
            ):
                hi = (pb, node)
    if lo is None:
        return hi[1] if hi else None
    if hi is None:
        return lo[1]
    d_lo, d_hi = t - lo[0], hi[0] - t
    if abs(d_lo - d_hi) > tie:
        return lo[1] if d_lo < d_hi else hi[1]
    # Near-tie: prefer the lower node (passes are the strong evidence) unless it teaches much
    # less; a node just below an almost-certain culprit has Pbad ~ 0 and would teach nothing.
    return lo[1] if _info(post, lo[0]) >= 0.8 * _info(post, hi[0]) else hi[1]


def _h2(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _info(post: Posterior, pbad: float) -> float:
    """Expected information (bits) of one run at a node with this Pbad, at mean f and eps."""
    f, e = post.f_mean, post.eps_mean
    p_fail = pbad * (1 - e) + (1 - pbad) * f
    return _h2(p_fail) - pbad * _h2(e) - (1 - pbad) * _h2(f)


def step(
    graph: RevGraph,
    basis: Node,
    latest: Node,
    observations: Sequence[Observation],
    params: SearchParams,
    hosts: int = 1,
) -> Decision:
    """One stateless bisection step: recompute the posterior from all runs, then decide."""
    try:
        idx = build_index(graph, basis, latest)
    except GraphError as e:
        return Outcome("doubtful", None, 0.0, 0, reason=str(e))
    runs = sum(1 for o in observations if o.kind == "probe")
    if params.fgrid.too_flaky:
        return Outcome("doubtful", None, 0.0, runs, reason="too flaky to bisect")
    obs = [o for o in observations if params.strict_host is None or o.host == params.strict_host]
    recent = [o for o in observations if o.kind == "probe"][-8:]
    if len(recent) >= 4 and 2 * sum(o.result == "broken" for o in recent) > len(recent):
        return Outcome("doubtful", None, 0.0, runs, reason="infrastructure: probes broken")
    try:
        post = compute_posterior(
            idx,
            obs,
            params.fgrid,
            params.eps_grid,
            params.eps_prior(),
            params.pi_flake,
            params.pi_env,
            params.prior_weights,
        )
    except ValueError:
        # Only a model without noise (f = 0 or eps = 0) can meet results it calls impossible.
        return Outcome("inconsistent", None, 0.0, runs, reason="results impossible under model")
    top, p_top = post.top_candidate()
    tau = params.tau
    evid = [o for o in obs if o.kind != "trigger" and o.result != "broken"]
    at_latest = sum(1 for o in evid if o.node == latest)
    basis_fails = sum(1 for o in evid if o.node == basis and o.result == "fail")
    fc = f_conf(post, params)
    n_conf = confirm_pairs(fc, params.confirm_c, params.confirm_min)
    max_runs = budget(len(idx.cands), params, n_conf)
    ev: _Evidence = {
        "p_flake": post.p_flake,
        "p_env": post.p_env,
        "f_mean": post.f_mean,
        "eps_mean": post.eps_mean,
        "max_runs": max_runs,
    }
    if post.p_flake >= tau and at_latest >= 2:
        return Outcome("flake", None, post.p_flake, runs, **ev)
    if post.p_env >= tau and basis_fails >= 1:
        return Outcome("unreproducible", None, post.p_env, runs, reason="environment", **ev)
    testable = _testable(idx, observations, params)
    if testable is not None:
        stuck = unconfirmable_mass(post, testable)
        if stuck >= params.tau_untestable:
            # The answer lies between nodes that cannot be built or run: no further run can
            # name a culprit, so stop now rather than alternate between its testable neighbours.
            return Outcome(
                "inconclusive",
                None,
                p_top,
                runs,
                reason=f"mass on untestable nodes ({stuck:.4f})",
                credible=credible_set(post),
                **ev,
            )
    if p_top >= params.tau_culprit:
        parents = [p for p in graph.parents(top) if p == basis or p in idx.pos]
        pairs, contrary, need = repro_sequence(obs, parents, top, "pass", "fail")
        held = contradictions_held(idx, obs, top, parents, params)
        if held > params.max_contradictions:
            return Outcome(
                "inconsistent",
                top,
                p_top,
                runs,
                reason=f"{held} contradictions with P(culprit) >= {params.tau_culprit}",
                **ev,
            )
        if pairs >= n_conf:
            why = fit_check(post, obs, params, fc)
            kind: OutcomeKind = "inconsistent" if why else "complete"
            return Outcome(kind, top, p_top, runs, reason=why or f"{contrary} contrary", **ev)
        if runs >= max_runs:
            return Outcome(
                "inconclusive",
                None,
                p_top,
                runs,
                reason="budget in confirmation",
                credible=credible_set(post),
                **ev,
            )
        seq: list[Node] = list(need)
        slots = max(1, min(hosts, max_runs - runs))
        while len(seq) < slots:
            seq += parents + [top]
        return Probes(tuple(seq[:slots]), "confirm", top, p_top, **ev)
    if runs >= max_runs:
        return Outcome(
            "inconclusive", None, p_top, runs, reason="budget", credible=credible_set(post), **ev
        )
    per_node: dict[Node, int] = {}
    for o in observations:
        if o.kind == "probe":
            per_node[o.node] = per_node.get(o.node, 0) + 1
    if per_node and max(per_node.values()) > max(2 * n_conf + 4, max_runs // 2):
        # Repeats are deliberate in a noisy search, but not without bound (§5.5). The design's
        # 2n + 4 alone cost 2.5% accuracy at f = 0.2 in the simulator, hence half the budget.
        return Outcome(
            "doubtful",
            None,
            p_top,
            runs,
            reason="flailing: identical probes",
            credible=credible_set(post),
            **ev,
        )
    probes: list[Node] = []
    phase = "search"
    # osstest's interleaved endpoint sequence first. With one slot it asks for the basis before
    # re-running the latest: a pure flake then costs one run more, a real culprit one run less.
    pairs, _, need = repro_sequence(obs, [basis], latest, "pass", "fail")
    want = params.endpoint_repro_proven if params.fgrid.proven else params.endpoint_repro
    if pairs < want:
        ends = [o for o in evid if o.node in (basis, latest)]
        if need[0] == basis and ends and ends[-1].node == basis and ends[-1].result == "fail":
            # The basis failed: run the latest before the basis again, so swapped endpoints
            # (basis fails, latest passes) show at once and both kinds of evidence come in.
            need = [latest]
        probes.append(need[0])
        phase = "endpoint"
    if post.p_flake >= params.rho_latest and latest not in probes:
        probes.append(latest)
    free = min(hosts, max_runs - runs) - len(probes)
    cache: dict[Node, float] = {}
    for i in range(1, free + 1):
        x = choose_probe(post, i / (free + 1), testable, params.tie, cache)
        if x is None:
            break
        probes.append(x)
    if not probes:
        return Outcome(
            "inconclusive",
            None,
            p_top,
            runs,
            reason="mass on untestable nodes",
            credible=credible_set(post),
            **ev,
        )
    if p_top >= params.align_from and phase == "search":
        # Near the end the search probes the top node and its parents; taking them in the
        # order of osstest's alternating sequence lets these runs also count as confirmation.
        parents = [p for p in graph.parents(top) if p == basis or p in idx.pos]
        local = set(parents) | {top}
        _, _, need = repro_sequence(obs, parents, top, "pass", "fail")
        seq = list(need)
        while len(seq) < len(probes):
            seq += parents + [top]
        it = iter(seq)
        probes = [next(it) if x in local else x for x in probes]
    return Probes(tuple(probes[:hosts]), phase, top, p_top, **ev)


def _testable(
    idx: Index, observations: Sequence[Observation], params: SearchParams
) -> set[Node] | None:
    """Candidates still worth a probe: not those whose build failed once (a compile failure
    fails again) or that broke `untestable_after_broken` times (infrastructure, §4.4)."""
    broken: dict[Node, int] = {}
    bad: set[Node] = set()
    for o in observations:
        if o.result == "broken":
            broken[o.node] = broken.get(o.node, 0) + 1
            if o.build_failed:
                bad.add(o.node)
    bad |= {n for n, k in broken.items() if k >= params.untestable_after_broken}
    if not bad:
        return None
    return {n for n in idx.cands if n not in bad}


def unconfirmable_mass(post: Posterior, testable: set[Node]) -> float:
    """Culprit mass on nodes that can never be confirmed: the node, or one of its parents other
    than the basis, cannot be tested. Once nearly all mass is there, the answer is
    `inconclusive` between those nodes whatever is run next."""
    idx = post.idx
    total = 0.0
    for node in idx.cands:
        if node not in testable or any(
            p != idx.basis and p not in testable for p in idx.rel_parents[node]
        ):
            total += post.node_mass(node)
    return total


def contradictions_held(
    idx: Index,
    obs: Sequence[Observation],
    top: Node,
    parents: Sequence[Node],
    params: SearchParams,
) -> int:
    """Contradictions to culprit `top` (a parent fails, `top` passes) after which the
    posterior still gave `top` at least tau (§6). The step is stateless, so each one is judged
    on the posterior of the runs up to and including it; there are few, and the count stops
    once it passes the limit."""
    held = 0
    pset = set(parents)
    for i, o in enumerate(obs):
        if o.kind == "trigger" or o.result == "broken":
            continue
        if not ((o.node in pset and o.result == "fail") or (o.node == top and o.result == "pass")):
            continue
        try:
            post = compute_posterior(
                idx,
                obs[: i + 1],
                params.fgrid,
                params.eps_grid,
                params.eps_prior(),
                params.pi_flake,
                params.pi_env,
                params.prior_weights,
            )
        except ValueError:
            continue
        if post.node_mass(top) >= params.tau_culprit:
            held += 1
            if held > params.max_contradictions:
                break
    return held


def swapped(observations: Sequence[Observation], basis: Node, latest: Node) -> bool:
    """The good revision failed and the bad one passed on their first probes: the endpoints
    look swapped (a fix, not a regression, or good and bad given the wrong way round)."""
    first: dict[Node, str] = {}
    for o in observations:
        if o.kind == "probe" and o.result != "broken" and o.node in (basis, latest):
            first.setdefault(o.node, o.result)
    return first.get(basis) == "fail" and first.get(latest) == "pass"


def fit_check(
    post: Posterior, obs: Sequence[Observation], params: SearchParams, f_ref: float | None = None
) -> str:
    """One-sided binomial tests of the culprit's fit (§6); returns the failed check or ''.

    f is learned from these same runs, so besides the pooled test at f_ref, each node called
    good is tested against the rate of the other good nodes (at least the history's f_conf),
    Bonferroni-corrected: fails piled on one good node point to a second culprit or a fix."""
    counts, _, _ = node_counts(post.idx, obs)
    fg = rg = pb = rb = 0
    good: list[tuple[Node, int, int]] = []
    for node, (fails, passes) in counts.items():
        bad = post.pbad(node) if node != post.idx.basis else post.p_env
        if bad <= 1 - params.tau:
            fg += fails
            rg += fails + passes
            good.append((node, fails, fails + passes))
        elif bad >= params.tau:
            pb += passes
            rb += fails + passes
    pooled = params.fgrid.conf if f_ref is None else f_ref
    if rg and binom_sf(fg, rg, pooled) < params.fit_alpha:
        return f"{fg}/{rg} fails at nodes called good"
    for _node, k, n in good:
        rest = max(params.fgrid.conf, (fg - k + 1) / (rg - n + 2))
        if k and binom_sf(k, n, rest) < params.fit_alpha / len(good):
            return f"{k}/{n} fails at one node called good (others {fg - k}/{rg - n})"
    if rb and binom_sf(pb, rb, max(post.eps_mean, 1e-3)) < params.fit_alpha:
        return f"{pb}/{rb} passes at nodes called bad"
    return ""
