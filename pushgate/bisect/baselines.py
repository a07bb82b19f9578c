"""Noiseless baseline bisectors with the same stateless step interface as `search.step`.

They share the candidate index, posterior and probe rule of the real search (with f = eps = 0,
no flake/env hypotheses the posterior is uniform over the consistent candidates and Pbad = 1/2 is
git's midpoint), so the benchmark compares real code paths:

- `bisect_k_step(k)`: up to k runs per node, stop at the first pass, good iff any passes; k = 1 is
  `git bisect run`. Always names a culprit.
- `osstest_step`: osstest's cs-bisection-step: 2x interleaved endpoints, one run per node, then 3
  alternating reproductions (parents pass, culprit fails); any contrary result in a reproduction
  sequence ends it `unreproducible` (§7.7, §7.9 of osstest-semantics.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pushgate.bisect.graph import GraphError, Node, RevGraph
from pushgate.bisect.posterior import (
    Index,
    Observation,
    Posterior,
    build_index,
    compute_posterior,
    fixed_grid,
)
from pushgate.bisect.search import Decision, Outcome, Probes, choose_probe

SAFETY_CAP = 400  # osstest has no budget, only flail detection; the simulator needs an end


def _noiseless(idx: Index, verdicts: Sequence[Observation]) -> Posterior:
    return compute_posterior(idx, verdicts, fixed_grid(0.0), (0.0,), (1.0,), 0.0, 0.0)


def _probe_count(observations: Sequence[Observation]) -> int:
    return sum(1 for o in observations if o.kind == "probe")


def one_run_bisect(
    graph: RevGraph,
    basis: Node,
    latest: Node,
    observations: Sequence[Observation],
    hosts: int = 1,
) -> Decision:
    """git bisect run: one run per node, trusted."""
    return bisect_k_step(graph, basis, latest, observations, 1, hosts)


StepFn = Callable[[RevGraph, Node, Node, Sequence[Observation], int], Decision]


def bisect_k(k: int) -> StepFn:
    """A step function for bisect-k (for drivers that take `step(graph, B, L, obs, hosts)`)."""

    def _step(
        graph: RevGraph,
        basis: Node,
        latest: Node,
        observations: Sequence[Observation],
        hosts: int = 1,
    ) -> Decision:
        return bisect_k_step(graph, basis, latest, observations, k, hosts)

    return _step


def bisect_k_step(
    graph: RevGraph,
    basis: Node,
    latest: Node,
    observations: Sequence[Observation],
    k: int,
    hosts: int = 1,
) -> Decision:
    try:
        idx = build_index(graph, basis, latest)
    except GraphError as e:
        return Outcome("doubtful", None, 0.0, 0, reason=str(e))
    runs = _probe_count(observations)
    fails: dict[Node, int] = {}
    good: set[Node] = {basis}
    order: list[Node] = []
    for o in observations:
        if o.result == "broken":
            continue
        if o.node not in fails and o.node not in good:
            order.append(o.node)
        if o.result == "pass":
            good.add(o.node)
        else:
            # The reported failure is trusted as fully bad, as `git bisect bad <latest>`.
            fails[o.node] = fails.get(o.node, 0) + (k if o.kind == "trigger" else 1)
    for node in order:
        if node not in good and 0 < fails.get(node, 0) < k:
            return Probes((node,), "search")
    verdicts = [Observation(n, "pass", kind="history") for n in good]
    verdicts += [
        Observation(n, "fail", kind="history") for n, c in fails.items() if c >= k and n not in good
    ]
    post = _noiseless(idx, verdicts)
    top, p = post.top_candidate()
    if p >= 1 - 1e-9:
        return Outcome("complete", top, 1.0, runs)
    x = choose_probe(post, 0.5, None, 0.0, {})
    assert x is not None
    return Probes((x,), "search", top, p)


def _strict_sequence(
    obs: Sequence[Observation], firsts: Sequence[Node], second: Node
) -> tuple[int, bool, Node]:
    """(pairs, contrary met, next node) for `firsts pass, then second fails`, osstest style."""
    pending = set(firsts)
    pairs = 0
    for o in obs:
        if o.result == "broken":
            continue
        if o.node in firsts:
            if o.result != "pass":
                return pairs, True, o.node
            pending.discard(o.node)
        elif o.node == second:
            if o.result != "fail":
                return pairs, True, o.node
            if not pending:
                pairs += 1
                pending = set(firsts)
    return pairs, False, (sorted(pending)[0] if pending else second)


def osstest_step(
    graph: RevGraph,
    basis: Node,
    latest: Node,
    observations: Sequence[Observation],
    hosts: int = 1,
    endpoint_repro: int = 2,
    final_repro: int = 3,
) -> Decision:
    try:
        idx = build_index(graph, basis, latest)
    except GraphError as e:
        return Outcome("doubtful", None, 0.0, 0, reason=str(e))
    runs = _probe_count(observations)
    if runs >= SAFETY_CAP:
        return Outcome("inconclusive", None, 0.0, runs, reason="safety cap")
    pairs, contrary, need = _strict_sequence(observations, [basis], latest)
    if contrary:
        what = "basis pass" if need == basis else "basis failure"
        return Outcome("unreproducible", None, 0.0, runs, reason=f"supposed {what}")
    if pairs < endpoint_repro:
        return Probes((need,), "endpoint")
    verdicts = [
        Observation(o.node, o.result, kind="history") for o in observations if o.result != "broken"
    ]
    try:
        post = _noiseless(idx, verdicts)
    except ValueError:
        return Outcome("inconsistent", None, 0.0, runs, reason="conflicted results")
    top, p = post.top_candidate()
    if p < 1 - 1e-9:
        x = choose_probe(post, 0.5, None, 0.0, {})
        assert x is not None
        return Probes((x,), "search", top, p)
    parents = [q for q in graph.parents(top) if q == basis or q in idx.pos]
    pairs, contrary, need = _strict_sequence(observations, parents, top)
    if contrary:
        return Outcome("unreproducible", None, 0.0, runs, reason="final reproduction failed")
    if pairs >= final_repro:
        return Outcome("complete", top, 1.0, runs)
    return Probes((need,), "confirm", top, 1.0)
