"""Revision-tuple graph: coalescing by date, merges, rewinds, real `git rev-list` input."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushgate.bisect.graph import (
    GraphError,
    RevGraph,
    TreeHistory,
    build_tuple_graph,
    chain_graph,
    parse_rev_list,
)
from pushgate.bisect.sim import random_dag_histories
from tests.gitrepo import make_repo


def linear(prefix: str, dates: list[int]) -> TreeHistory:
    names = [f"{prefix}{i}" for i in range(len(dates))]
    parents = {n: ([names[i - 1]] if i else []) for i, n in enumerate(names)}
    return TreeHistory(parents, dict(zip(names, dates, strict=True)), names[0], names[-1])


def test_two_linear_trees_coalesce_into_a_date_ordered_chain() -> None:
    g = build_tuple_graph({"xen": linear("x", [0, 10, 30]), "linux": linear("l", [5, 20, 40])})
    assert g.trees == ("linux", "xen")  # tuple order: tree names sorted
    order = g.topo_order()
    assert order[0] == ("l0", "x0") and order[-1] == ("l2", "x2")
    assert len(g) == 5  # 1 + 2 + 2: every edge changes one tree
    # Expanding the newest component first yields the commits in date order.
    assert order == [("l0", "x0"), ("l0", "x1"), ("l1", "x1"), ("l1", "x2"), ("l2", "x2")]
    for node in order[1:]:
        (p,) = g.parents(node)
        assert sum(a != b for a, b in zip(p, node, strict=True)) == 1
    assert g.as_dict(order[2]) == {"linux": "l1", "xen": "x1"}
    assert g.candidates(order[0], order[-1]) == order[1:]


def test_merge_gives_a_tuple_two_parents_and_is_a_candidate() -> None:
    # m0 - m1 - M(m1, a1) with arm m0 - a0 - a1
    parents = {"m0": [], "m1": ["m0"], "a0": ["m0"], "a1": ["a0"], "M": ["m1", "a1"]}
    dates = {"m0": 0, "m1": 10, "a0": 5, "a1": 7, "M": 20}
    g = build_tuple_graph({"t": TreeHistory(parents, dates, "m0", "M")})
    assert set(g.parents(("M",))) == {("m1",), ("a1",)}
    cands = g.candidates(("m0",), ("M",))
    assert set(cands) == {("m1",), ("a0",), ("a1",), ("M",)}
    assert g.ancestors(("M",)) == {("m0",), ("m1",), ("a0",), ("a1",), ("M",)}
    assert g.descendants(("a0",)) == {("a0",), ("a1",), ("M",)}
    assert not g.is_ancestor(("m1",), ("a1",))
    assert g.is_ancestor(("a0",), ("M",))


def test_arm_not_descending_from_basis_is_outside_the_candidates() -> None:
    # The arm x0 - x1 forks before the basis (its base is not in the history): merge takes blame.
    parents = {"m0": [], "m1": ["m0"], "x0": ["old"], "x1": ["x0"], "M": ["m1", "x1"]}
    dates = {"m0": 0, "m1": 10, "x0": 3, "x1": 4, "M": 20}
    g = build_tuple_graph({"t": TreeHistory(parents, dates, "m0", "M")})
    assert ("x1",) in g
    assert set(g.candidates(("m0",), ("M",))) == {("m1",), ("M",)}


def test_rewound_tree_becomes_a_two_node_history() -> None:
    parents = {"b": ["a"], "a": [], "z": ["y"], "y": []}  # latest z does not descend from b
    g = build_tuple_graph({"t": TreeHistory(parents, {"b": 1, "z": 2}, "b", "z")})
    assert g.parents(("z",)) == (("b",),)
    assert g.candidates(("b",), ("z",)) == [("z",)]


def test_basis_not_below_latest_is_a_graph_error() -> None:
    g = RevGraph(["t"], {("a",): [], ("b",): []}, {("a",): 0, ("b",): 1})
    with pytest.raises(GraphError):
        g.relevant(("a",), ("b",))
    with pytest.raises(GraphError):
        g.candidates(("a",), ("nope",))


def test_chain_graph_and_topo_positions() -> None:
    g = chain_graph(5)
    assert [n[0] for n in g.topo_order()] == [f"c{i}" for i in range(6)]
    assert g.position(("c3",)) == 3 and g.children(("c3",)) == (("c4",),)
    assert len(g.ancestors(("c3",))) == 4


def test_parse_rev_list_of_a_real_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    base = repo.commit("base", files={"a": "1\n"})
    m1 = repo.commit("main 1", files={"a": "2\n"})
    repo.branch("side", at=base)
    s1 = repo.commit("side 1", files={"b": "1\n"})
    repo.checkout("main")
    merge = repo.merge("side")
    out = repo.git("rev-list", "--parents", "--format=%ct", f"{base}^!", merge)
    parents, dates = parse_rev_list(out)
    assert set(parents) == {base, m1, s1, merge}
    assert set(parents[merge]) == {m1, s1} and parents[base] == []
    assert dates[m1] < dates[merge]
    g = build_tuple_graph({"r": TreeHistory(parents, dates, base, merge)})
    assert set(g.candidates((base,), (merge,))) == {(m1,), (s1,), (merge,)}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3))
def test_random_multi_tree_dags_are_well_formed(seed: int, trees: int) -> None:
    hist = random_dag_histories(random.Random(seed), trees=trees, commits=6)
    g = build_tuple_graph(hist)
    pos = {n: i for i, n in enumerate(g.topo_order())}
    for node in g.nodes:
        for p in g.parents(node):
            assert pos[p] < pos[node]
            assert sum(a != b for a, b in zip(p, node, strict=True)) == 1
    basis = tuple(hist[t].basis for t in g.trees)
    latest = tuple(hist[t].latest for t in g.trees)
    rel = g.relevant(basis, latest)
    assert basis in rel and latest in rel
    assert all(basis in g.ancestors(n) and n in g.ancestors(latest) for n in rel)
