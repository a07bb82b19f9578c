"""Flake-aware search: model pieces, stateless step, outcomes, baselines, a DAG property."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushgate.bisect.baselines import bisect_k, one_run_bisect, osstest_step
from pushgate.bisect.graph import RevGraph, chain_graph
from pushgate.bisect.posterior import (
    FlakeGrid,
    Observation,
    beta_cdf,
    beta_ppf,
    build_index,
    compute_posterior,
    flake_grid,
    learned_priors,
)
from pushgate.bisect.search import (
    Outcome,
    Probes,
    SearchParams,
    binom_sf,
    budget,
    confirm_pairs,
    repro_sequence,
    step,
)
from pushgate.bisect.sim import Truth, linear_case, pushgate_step, random_dag, simulate

B, L = ("c0",), ("c64",)


def start(basis: tuple[str, ...] = B, latest: tuple[str, ...] = L) -> list[Observation]:
    return [
        Observation(basis, "pass", "h0", "history"),
        Observation(latest, "fail", "h0", "trigger"),
    ]


def test_confirm_pairs_matches_the_design_table() -> None:
    assert [confirm_pairs(f) for f in (0.1, 0.2, 0.3, 0.4, 0.5)] == [3, 5, 6, 8, 10]
    assert [confirm_pairs(f, 0.9999) for f in (0.1, 0.2, 0.3, 0.4, 0.5)] == [4, 6, 8, 11, 14]
    assert confirm_pairs(0.1, 0.99999999) == 8


def test_beta_quantiles_and_flake_grid() -> None:
    assert beta_ppf(0.3, 1, 1) == pytest.approx(0.3, abs=1e-9)
    assert beta_cdf(0.5, 2, 2) == pytest.approx(0.5, abs=1e-9)
    # I_x(a, b) = P(Binomial(a + b - 1, x) >= a) for integer a, b.
    assert beta_cdf(0.49, 3, 7) == pytest.approx(binom_sf(3, 9, 0.49), abs=1e-9)
    assert beta_ppf(0.9, 3, 7) == pytest.approx(0.4901, abs=1e-3)
    # No history: the floor holds (osstest's 3 pairs), but the grid reaches up to f_max so the
    # bisection's own false failures can move f.
    none = flake_grid(passes=0, fails=0)
    assert none.points[0] == 0.1 and none.points[-1] == 0.5 and none.conf == 0.1
    assert not none.proven and none.weights[0] > 0.9 and sum(none.weights) == pytest.approx(1)
    # 20 clean known-good runs prove the step deterministic: below the floor, fewer pairs.
    clean = flake_grid(passes=20, fails=0)
    assert clean.proven and clean.points[0] < 0.01 and clean.conf < 0.03
    assert confirm_pairs(clean.conf, minimum=SearchParams().confirm_min) == 2
    # Its 5% hedge is the no-history grid (mostly the floor), not an even spread that kept
    # 1.5% of the prior on f >= 0.3 against 20 clean runs and cost a clean bisection a run.
    tail = sum(w for w, x in zip(clean.weights, clean.points, strict=True) if x >= 0.3)
    at_floor = dict(zip(clean.points, clean.weights, strict=True))[0.1]
    assert tail < 0.002 and at_floor > 0.04 and sum(clean.weights) == pytest.approx(1)
    assert not flake_grid(passes=19, fails=0).proven
    flaky = flake_grid(passes=40, fails=10)
    assert not flaky.proven and 0.2 < flaky.conf < 0.3
    best = max(zip(flaky.weights, flaky.points, strict=True))[1]
    assert best in (0.15, 0.2)
    assert flake_grid(passes=10, fails=40).too_flaky


def test_binomial_tail() -> None:
    assert binom_sf(0, 5, 0.3) == 1.0
    assert binom_sf(5, 5, 0.5) == pytest.approx(1 / 32)
    assert binom_sf(2, 3, 0.0) == 0.0


def test_posterior_matches_a_brute_force_sum() -> None:
    g = chain_graph(6)
    idx = build_index(g, ("c0",), ("c6",))
    obs = [
        Observation(("c3",), "fail"),
        Observation(("c1",), "pass"),
        Observation(("c3",), "pass"),
        Observation(("c6",), "pass"),
    ]
    fg = FlakeGrid((0.1, 0.3), (0.5, 0.5), 0.3, False)
    post = compute_posterior(idx, obs, fg, (0.01, 0.2), (0.8, 0.2), 0.4, 0.02)
    # Brute force over hypotheses: culprit c1..c6, flake, env.
    pos = {"c1": 1, "c3": 3, "c6": 6}
    weights: dict[str, float] = {}
    for h in [f"c{i}" for i in range(1, 7)] + ["flake", "env"]:
        tot = 0.0
        for f, wf in zip(fg.points, fg.weights, strict=True):
            for e, we in ((0.01, 0.8), (0.2, 0.2)):
                like = 1.0
                for o in obs:
                    if h == "env":
                        bad = True
                    elif h == "flake":
                        bad = False
                    else:
                        bad = int(h[1:]) <= pos[o.node[0]]
                    pf = 1 - e if bad else f
                    like *= pf if o.result == "fail" else 1 - pf
                tot += wf * we * like
        prior = {"flake": 0.4, "env": 0.02}.get(h, 0.58 / 6)
        weights[h] = prior * tot
    z = sum(weights.values())
    assert post.p_flake == pytest.approx(weights["flake"] / z)
    assert post.p_env == pytest.approx(weights["env"] / z)
    for i in range(1, 7):
        assert post.node_mass((f"c{i}",)) == pytest.approx(weights[f"c{i}"] / z)
    assert post.pbad(("c3",)) == pytest.approx(
        sum(weights[f"c{i}"] for i in range(1, 4)) / z + weights["env"] / z
    )


def test_first_steps_reproduce_the_endpoints_then_search() -> None:
    g, b, latest = linear_case(64)
    params = SearchParams(strict_host="h0")
    obs = start(b, latest)
    d = step(g, b, latest, obs, params)
    assert isinstance(d, Probes) and d.nodes == (b,) and d.phase == "endpoint"
    obs.append(Observation(b, "pass", "h0"))
    d = step(g, b, latest, obs, params)
    assert isinstance(d, Probes) and d.nodes == (latest,)
    obs.append(Observation(latest, "fail", "h0"))
    d = step(g, b, latest, obs, params)
    assert isinstance(d, Probes) and d.phase == "search"
    assert 24 <= int(d.nodes[0][0][1:]) <= 40  # near the middle
    # Stateless: the same observations give the same decision.
    assert step(g, b, latest, list(obs), params) == d
    # Four hosts: endpoints fill two slots, multisection the others, thresholds ordered.
    d4 = step(g, b, latest, start(b, latest), SearchParams(), hosts=4)
    assert isinstance(d4, Probes) and d4.nodes[:2] == (b, latest)
    x1, x2 = (int(n[0][1:]) for n in d4.nodes[2:])
    assert x1 < x2


def test_runs_on_other_hosts_are_not_evidence_in_strict_mode() -> None:
    g, b, latest = linear_case(64)
    params = SearchParams(strict_host="h0")
    obs = start(b, latest) + [Observation(b, "pass", "h9"), Observation(latest, "fail", "h9")]
    d = step(g, b, latest, obs, params)
    assert isinstance(d, Probes) and d.nodes == (b,)


@pytest.mark.parametrize("n", [8, 100, 4096])
def test_deterministic_culprit_found_and_confirmed(n: int) -> None:
    g, b, latest = linear_case(n)
    culprit = (f"c{(n * 2) // 3}",)
    r = simulate(
        pushgate_step(SearchParams(strict_host="h0")), g, b, latest, Truth(culprit, 0.0), seed=1
    )
    assert r.outcome.kind == "complete" and r.outcome.culprit == culprit
    assert r.outcome.confidence >= 0.998 and r.outcome.exit_code == 4
    assert r.runs <= math.ceil(math.log2(n)) + 2 + 2 * 3 + 3


def test_flaky_culprit_is_found() -> None:
    g, b, latest = linear_case(128)
    params = SearchParams(fgrid=flake_grid(40, 10), strict_host="h0")
    hits = 0
    for seed in range(10):
        culprit = (f"c{17 + 9 * seed}",)
        r = simulate(pushgate_step(params), g, b, latest, Truth(culprit, 0.2), seed=seed)
        assert r.outcome.culprit in (None, culprit)  # never a wrong blame
        hits += r.outcome.culprit == culprit
    assert hits >= 9


def test_pure_flake_is_classified_as_flake() -> None:
    g, b, latest = linear_case(128)
    for f in (0.0, 0.2):
        params = SearchParams(fgrid=flake_grid(50 - 50 * f, 50 * f), strict_host="h0")
        r = simulate(pushgate_step(params), g, b, latest, Truth(None, f), seed=3)
        assert r.outcome.kind == "flake" and r.outcome.culprit is None
        assert r.outcome.exit_code == 20 and r.runs <= 12


def test_basis_that_now_fails_is_unreproducible() -> None:
    g, b, latest = linear_case(32)
    obs = start(b, latest) + [Observation(b, "fail")] * 8 + [Observation(latest, "fail")] * 2
    d = step(g, b, latest, obs, SearchParams())
    assert isinstance(d, Outcome) and d.kind == "unreproducible" and d.exit_code == 16


def test_budget_too_flaky_and_broken_graph() -> None:
    g, b, latest = linear_case(32)
    d = step(g, b, latest, start(b, latest), SearchParams(max_runs=0))
    assert isinstance(d, Outcome) and d.kind == "inconclusive" and d.credible
    d = step(g, b, latest, start(b, latest), SearchParams(fgrid=flake_grid(5, 45)))
    assert isinstance(d, Outcome) and d.kind == "doubtful" and "flaky" in d.reason
    d = step(g, latest, b, start(latest, b), SearchParams())
    assert isinstance(d, Outcome) and d.kind == "doubtful"
    assert budget(32, SearchParams()) == math.ceil(4 * math.log2(33)) + 6 + 8


def test_untestable_nodes_are_not_probed() -> None:
    g, b, latest = linear_case(64)
    obs = start(b, latest) + [Observation(b, "pass"), Observation(latest, "fail")]
    first = step(g, b, latest, obs, SearchParams())
    assert isinstance(first, Probes)
    x = first.nodes[0]
    obs += [Observation(x, "broken"), Observation(x, "broken")]
    d = step(g, b, latest, obs, SearchParams())
    assert isinstance(d, Probes) and x not in d.nodes


def test_contradicting_culprit_fails_the_fit_check() -> None:
    g, b, latest = linear_case(16)
    c, p = ("c8",), ("c7",)
    obs = start(b, latest) + [Observation(b, "pass"), Observation(latest, "fail")]
    obs += [Observation(p, "pass"), Observation(c, "fail")] * 6
    # Many failures at a node the posterior calls good (here the basis): host trouble.
    obs += [Observation(b, "fail")] * 10
    obs += [Observation(p, "pass"), Observation(c, "fail")] * 8
    d = step(g, b, latest, obs, SearchParams(max_runs=100))
    assert isinstance(d, Outcome) and d.kind == "inconsistent" and d.culprit == c


def test_repro_sequence_alternation() -> None:
    p, c = ("p",), ("c",)
    obs = [
        Observation(c, "fail"),
        Observation(p, "pass"),
        Observation(p, "fail"),
        Observation(c, "fail"),
        Observation(c, "fail"),
        Observation(p, "pass"),
        Observation(c, "pass"),
        Observation(c, "fail"),
    ]
    pairs, contrary, need = repro_sequence(obs, [p], c, "pass", "fail")
    assert (pairs, contrary, need) == (2, 2, [p])


def test_baselines() -> None:
    g, b, latest = linear_case(64)
    culprit = ("c20",)
    r = simulate(lambda *a: one_run_bisect(*a), g, b, latest, Truth(culprit, 0.0), seed=1)
    assert r.outcome.culprit == culprit and r.runs == 6
    r = simulate(bisect_k(4), g, b, latest, Truth(culprit, 0.0), seed=1)
    assert r.outcome.culprit == culprit and r.runs > 6
    r = simulate(osstest_step, g, b, latest, Truth(culprit, 0.0), seed=1)
    assert r.outcome.kind == "complete" and r.outcome.culprit == culprit
    r = simulate(osstest_step, g, b, latest, Truth(None, 0.0), seed=1)
    assert r.outcome.kind == "unreproducible" and r.runs == 2
    r = simulate(lambda *a: one_run_bisect(*a), g, b, latest, Truth(None, 0.0), seed=1)
    assert r.outcome.culprit == latest  # git bisect has no "no culprit" answer


NOISELESS = SearchParams(
    fgrid=FlakeGrid((0.0,), (1.0,), 0.1, False),
    eps_grid=(0.0,),
    eps_weights=(1.0,),
    strict_host="h0",
)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 100_000), st.integers(1, 3), st.integers(2, 14), st.randoms())
def test_noiseless_search_on_random_dags(
    seed: int, trees: int, commits: int, pick: random.Random
) -> None:
    graph, basis, latest = random_dag(random.Random(seed), trees, commits)
    cands = graph.candidates(basis, latest)
    culprit = pick.choice(cands)
    r = simulate(pushgate_step(NOISELESS), graph, basis, latest, Truth(culprit, 0.0), seed=seed)
    assert r.outcome.kind == "complete" and r.outcome.culprit == culprit
    n = confirm_pairs(0.1)
    parents = [p for p in graph.parents(culprit) if p in cands or p == basis]
    # A merge culprit needs every parent to pass in each pair, hence the parents factor.
    assert r.runs <= math.ceil(math.log2(len(cands))) + 2 + n * (1 + len(parents))


def test_class_mode_uses_fewer_rounds() -> None:
    g, b, latest = linear_case(512)
    rounds = {}
    for hosts in (1, 4):
        params = SearchParams(strict_host="h0" if hosts == 1 else None)
        r = simulate(pushgate_step(params), g, b, latest, Truth(("c300",), 0.0), 5, hosts)
        assert r.outcome.culprit == ("c300",)
        rounds[hosts] = r.rounds
    assert rounds[4] <= 0.6 * rounds[1]


def test_graph_cache_is_per_endpoint_pair() -> None:
    g = RevGraph(
        ["t"], {("a",): [], ("b",): [("a",)], ("c",): [("b",)]}, {("a",): 0, ("b",): 1, ("c",): 2}
    )
    assert build_index(g, ("a",), ("c",)).cands == [("b",), ("c",)]
    assert build_index(g, ("b",), ("c",)).cands == [("c",)]


def test_learned_priors_shrink_towards_defaults() -> None:
    assert learned_priors(0, 0, 0) == pytest.approx((0.4, 0.02))
    pf, pe = learned_priors(flakes=9, envs=0, total=10)
    assert pf == pytest.approx((4 + 9) / 20) and pe == pytest.approx(0.2 / 20)


def test_noiseless_model_meeting_a_contradiction_is_inconsistent() -> None:
    g, b, latest = linear_case(8)
    obs = start(b, latest) + [
        Observation(("c4",), "fail"),
        Observation(("c6",), "pass"),
        Observation(latest, "pass"),
    ]
    d = step(g, b, latest, obs, NOISELESS)
    assert isinstance(d, Outcome) and d.kind == "inconsistent"


def test_endless_repeats_of_one_probe_are_flailing() -> None:
    g, b, latest = linear_case(32)
    obs = start(b, latest) + [Observation(b, "pass"), Observation(latest, "fail")]
    obs += [Observation(("c9",), "fail"), Observation(("c9",), "pass")] * 8
    d = step(g, b, latest, obs, SearchParams(max_runs=30))  # limit: max(2n + 4, 30 // 2)
    assert isinstance(d, Outcome) and d.kind == "doubtful" and "flailing" in d.reason


def test_prior_weights_shift_mass_and_zero_weight_nodes_are_never_blamed() -> None:
    g = chain_graph(6)
    idx = build_index(g, ("c0",), ("c6",))
    w: dict[tuple[str, ...], float] = {("c2",): 0.0, ("c5",): 4.0}
    post = compute_posterior(idx, [], flake_grid(50, 0), (0.01,), (1.0,), 0.4, 0.02, w)
    assert post.node_mass(("c2",)) == 0.0
    assert post.node_mass(("c5",)) == pytest.approx(4 * post.node_mass(("c1",)))
    assert post.top_candidate()[0] == ("c5",)
    g2, b, latest = linear_case(16)
    params = SearchParams(strict_host="h0", prior_weights={("c9",): 0.0})
    r = simulate(pushgate_step(params), g2, b, latest, Truth(("c9",), 0.0), seed=2)
    # The prior forbids the true culprit: no node fits, and the search abstains.
    assert r.outcome.kind == "inconclusive" and r.outcome.culprit is None
    assert ("c8",) in r.outcome.credible
    assert r.outcome.f_mean == pytest.approx(0.1) and 0 < r.outcome.eps_mean < 0.2


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 100_000))
def test_all_pbad_matches_per_node_pbad_on_random_dags(seed: int) -> None:
    rng = random.Random(seed)
    graph, basis, latest = random_dag(rng, rng.choice((1, 2, 3)), 10)
    idx = build_index(graph, basis, latest)
    nodes = [basis] + idx.cands
    obs = [Observation(rng.choice(nodes), rng.choice(("pass", "fail"))) for _ in range(8)]
    post = compute_posterior(idx, obs, flake_grid(45, 5), (0.01, 0.1), (0.8, 0.2), 0.4, 0.02)
    fast = post.all_pbad()
    for node in idx.cands:
        assert fast[node] == pytest.approx(post.pbad(node), abs=1e-12)
        assert idx.anc_size[node] == len(graph.ancestors(node) & set(idx.cands))
