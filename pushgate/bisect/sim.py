"""Seeded, deterministic simulator for bisection (spec/flake-aware-bisection.md §9).

A fake results store answers runs from a hidden truth (a culprit node, or none for a pure flake;
the true flake rate f and false-pass rate eps), and `simulate` drives any step function with the
`step(graph, basis, latest, observations, hosts)` shape until it returns an Outcome.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pushgate.bisect.baselines import StepFn, bisect_k, osstest_step
from pushgate.bisect.graph import Node, RevGraph, TreeHistory, build_tuple_graph, chain_graph
from pushgate.bisect.posterior import Observation, flake_grid
from pushgate.bisect.search import Decision, Outcome, SearchParams, step

STRICT_HOST = "h0"


@dataclass(frozen=True)
class Truth:
    culprit: Node | None  # None: a pure flake
    f: float
    eps: float = 0.0
    unbuildable: frozenset[Node] = frozenset()  # nodes whose build fails (compile error)


class FakeResults:
    """Results of runs under a truth; runs are independent given the node."""

    def __init__(self, graph: RevGraph, truth: Truth, seed: int) -> None:
        self.truth = truth
        self.rng = random.Random(seed)
        self.bad = graph.descendants(truth.culprit) if truth.culprit is not None else set()

    def run(self, node: Node) -> str:
        if node in self.truth.unbuildable:
            return "broken"
        p_fail = 1.0 - self.truth.eps if node in self.bad else self.truth.f
        return "fail" if self.rng.random() < p_fail else "pass"


@dataclass(frozen=True)
class SimResult:
    outcome: Outcome
    runs: int
    rounds: int


def simulate(
    stepfn: StepFn,
    graph: RevGraph,
    basis: Node,
    latest: Node,
    truth: Truth,
    seed: int,
    hosts: int = 1,
    max_rounds: int = 2000,
) -> SimResult:
    """Run a bisection to its end. The basis pass and the triggering failure pre-exist."""
    store = FakeResults(graph, truth, seed)
    obs = [
        Observation(basis, "pass", STRICT_HOST, "history"),
        Observation(latest, "fail", STRICT_HOST, "trigger"),
    ]
    rounds = 0
    while rounds < max_rounds:
        d: Decision = stepfn(graph, basis, latest, obs, hosts)
        if isinstance(d, Outcome):
            return SimResult(d, sum(o.kind == "probe" for o in obs), rounds)
        rounds += 1
        for i, node in enumerate(d.nodes):
            # Rotating slots over hosts swaps a confirmation pair's hosts each round.
            host = f"h{(i + rounds) % hosts}" if hosts > 1 else STRICT_HOST
            result = store.run(node)
            unbuilt = node in truth.unbuildable
            obs.append(Observation(node, result, host, "probe", unbuilt))  # type: ignore[arg-type]
    raise RuntimeError("simulation did not terminate")


def history_counts(f: float, rng: random.Random, runs: int = 50) -> tuple[int, int]:
    """(passes, fails) of a simulated known-good history for the step's f estimate."""
    fails = sum(rng.random() < f for _ in range(runs))
    return runs - fails, fails


def pushgate_step(params: SearchParams) -> StepFn:
    def _step(
        graph: RevGraph,
        basis: Node,
        latest: Node,
        observations: Sequence[Observation],
        hosts: int = 1,
    ) -> Decision:
        return step(graph, basis, latest, observations, params, hosts)

    return _step


def methods(
    eps_grid: tuple[float, ...] | None = None,
    tau_culprit: float | None = None,
) -> dict[str, Callable[[tuple[int, int]], tuple[StepFn, int]]]:
    """Benchmark methods: name -> (history (passes, fails) -> (step function, hosts))."""

    def pg(hosts: int) -> Callable[[tuple[int, int]], tuple[StepFn, int]]:
        def make(hist: tuple[int, int]) -> tuple[StepFn, int]:
            kw: dict[str, object] = {} if eps_grid is None else {"eps_grid": eps_grid}
            if tau_culprit is not None:
                kw["tau_culprit"] = tau_culprit
            params = SearchParams(
                fgrid=flake_grid(*hist),
                strict_host=STRICT_HOST if hosts == 1 else None,
                **kw,  # type: ignore[arg-type]
            )
            return pushgate_step(params), hosts

        return make

    def fixed(fn: StepFn) -> Callable[[tuple[int, int]], tuple[StepFn, int]]:
        return lambda hist: (fn, 1)

    return {
        "gitbisect-1": fixed(bisect_k(1)),
        "bisect-2": fixed(bisect_k(2)),
        "bisect-4": fixed(bisect_k(4)),
        "bisect-8": fixed(bisect_k(8)),
        "osstest": fixed(osstest_step),
        "pushgate-H1": pg(1),
        "pushgate-H4": pg(4),
    }


def random_dag_histories(
    rng: random.Random,
    trees: int = 2,
    commits: int = 12,
    merge_prob: float = 0.1,
    outside_prob: float = 0.3,
) -> dict[str, TreeHistory]:
    """Synthetic trees: mainlines with merged side arms (1-20 commits), some arms forking from
    before the basis (outside V), interleaved by commit date."""
    out: dict[str, TreeHistory] = {}
    for t in range(trees):
        name = f"t{t}"
        parents: dict[str, list[str]] = {f"{name}m0": []}
        dates: dict[str, int] = {f"{name}m0": 0}
        clock = 0
        for i in range(1, commits + 1):
            c, prev = f"{name}m{i}", f"{name}m{i - 1}"
            clock += rng.randint(1, 100)
            if rng.random() < merge_prob:
                arm_len = rng.randint(1, 20)
                fork_i = rng.randint(0, i - 1)
                outside = rng.random() < outside_prob
                base = f"{name}x{i}" if outside else f"{name}m{fork_i}"
                arm_clock = dates.get(base, 0)
                last = base
                for j in range(arm_len):
                    a = f"{name}a{i}_{j}"
                    parents[a] = [last] if (last != base or not outside) else []
                    arm_clock = min(arm_clock + rng.randint(1, 5), clock - 1)
                    dates[a] = arm_clock
                    last = a
                parents[c] = [prev, last]
            else:
                parents[c] = [prev]
            dates[c] = clock
        out[name] = TreeHistory(parents, dates, f"{name}m0", f"{name}m{commits}")
    return out


def random_dag(
    rng: random.Random, trees: int = 2, commits: int = 12
) -> tuple[RevGraph, Node, Node]:
    hist = random_dag_histories(rng, trees, commits)
    graph = build_tuple_graph(hist)
    basis = tuple(hist[t].basis for t in graph.trees)
    latest = tuple(hist[t].latest for t in graph.trees)
    return graph, basis, latest


def linear_case(n: int) -> tuple[RevGraph, Node, Node]:
    g = chain_graph(n)
    return g, ("c0",), (f"c{n}",)
