"""The revision-tuple graph of a bisection (spec/osstest-semantics.md §7.4).

A node is a revision tuple: one commit per tree, in the graph's fixed tree order, stored as a
plain tuple of strings so it can be hashed; `RevGraph.as_dict` gives the tree -> commit view.
Every edge changes exactly one tree. The graph is built from plain per-tree commit DAGs, so it
does not depend on git; `parse_rev_list` turns `git rev-list --parents --format=%ct` output into
that plain input.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Node = tuple[str, ...]


@dataclass(frozen=True)
class TreeHistory:
    """One tree's commits from its basis to its latest revision.

    `parents` maps commit -> parents; parents missing from the map (history before the basis,
    or the base of a merged-in arm that does not descend from the basis) end the walk there.
    """

    parents: Mapping[str, Sequence[str]]
    dates: Mapping[str, int]
    basis: str
    latest: str


class GraphError(ValueError):
    """The input cannot form a revision-tuple graph (osstest: `doubtful`)."""


class RevGraph:
    """An immutable DAG of revision tuples with parents, dates and a date-ordered topo order."""

    def __init__(
        self,
        trees: Sequence[str],
        parents: Mapping[Node, Sequence[Node]],
        dates: Mapping[Node, int],
    ) -> None:
        self.trees: tuple[str, ...] = tuple(trees)
        self._parents: dict[Node, tuple[Node, ...]] = {n: tuple(p) for n, p in parents.items()}
        for node, ps in list(self._parents.items()):
            for p in ps:
                if p not in self._parents:
                    self._parents[p] = ()
            if len(node) != len(self.trees):
                raise GraphError(f"node {node!r} does not have {len(self.trees)} components")
        self._dates: dict[Node, int] = {n: int(dates.get(n, 0)) for n in self._parents}
        self._children: dict[Node, list[Node]] = {n: [] for n in self._parents}
        for node, ps in self._parents.items():
            for p in ps:
                self._children[p].append(node)
        self._topo = self._toposort()
        self._pos = {n: i for i, n in enumerate(self._topo)}
        # Per-instance memo for derived, read-only structures (e.g. the search's index).
        self.cache: dict[object, object] = {}

    def __len__(self) -> int:
        return len(self._parents)

    def __contains__(self, node: object) -> bool:
        return node in self._parents

    @property
    def nodes(self) -> list[Node]:
        return list(self._topo)

    def parents(self, node: Node) -> tuple[Node, ...]:
        return self._parents[node]

    def children(self, node: Node) -> tuple[Node, ...]:
        return tuple(self._children[node])

    def date(self, node: Node) -> int:
        return self._dates[node]

    def as_dict(self, node: Node) -> dict[str, str]:
        return dict(zip(self.trees, node, strict=True))

    def topo_order(self) -> list[Node]:
        """Parents before children; among ready nodes the oldest date first (osstest's lin)."""
        return list(self._topo)

    def position(self, node: Node) -> int:
        return self._pos[node]

    def _toposort(self) -> list[Node]:
        indeg = {n: len(ps) for n, ps in self._parents.items()}
        heap = [(self._dates[n], n) for n, d in indeg.items() if d == 0]
        heapq.heapify(heap)
        order: list[Node] = []
        while heap:
            _, node = heapq.heappop(heap)
            order.append(node)
            for child in self._children[node]:
                indeg[child] -= 1
                if indeg[child] == 0:
                    heapq.heappush(heap, (self._dates[child], child))
        if len(order) != len(self._parents):
            raise GraphError("revision graph has a cycle")
        return order

    def _walk(self, start: Node, step: Mapping[Node, Sequence[Node]]) -> set[Node]:
        seen = {start}
        stack = [start]
        while stack:
            for nxt in step[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def ancestors(self, node: Node) -> set[Node]:
        """Ancestors of `node`, itself included (x ⪯ node)."""
        return self._walk(node, self._parents)

    def descendants(self, node: Node) -> set[Node]:
        """Descendants of `node`, itself included (node ⪯ x)."""
        return self._walk(node, self._children)

    def is_ancestor(self, a: Node, b: Node) -> bool:
        return a == b or (self._pos[a] < self._pos[b] and a in self.ancestors(b))

    def relevant(self, basis: Node, latest: Node) -> set[Node]:
        """V = {x : basis ⪯ x ⪯ latest}; raises GraphError if basis is not below latest."""
        if basis not in self or latest not in self:
            raise GraphError("basis or latest tuple is not in the graph")
        anc = self.ancestors(latest)
        if basis not in anc:
            raise GraphError("basis tuple is not an ancestor of the latest tuple")
        return anc & self.descendants(basis)

    def candidates(self, basis: Node, latest: Node) -> list[Node]:
        """V* = V minus the basis, in topological order."""
        rel = self.relevant(basis, latest)
        return [n for n in self._topo if n in rel and n != basis]


def _reaches(parents: Mapping[str, Sequence[str]], start: str, goal: str) -> bool:
    seen = {start}
    stack = [start]
    while stack:
        c = stack.pop()
        if c == goal:
            return True
        for p in parents.get(c, ()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return False


def _normalise(hist: TreeHistory) -> TreeHistory:
    """A rewound tree (basis not below latest) becomes a flattened two-node history."""
    if hist.basis == hist.latest or _reaches(hist.parents, hist.latest, hist.basis):
        return hist
    dates = {hist.basis: hist.dates.get(hist.basis, 0), hist.latest: hist.dates.get(hist.latest, 0)}
    return TreeHistory({hist.latest: [hist.basis], hist.basis: []}, dates, hist.basis, hist.latest)


def build_tuple_graph(histories: Mapping[str, TreeHistory], max_nodes: int = 200_000) -> RevGraph:
    """Coalesce per-tree histories into one tuple DAG, as osstest's adhoc-revtuple-generator.

    From the latest tuple, each tuple expands the component whose commit is newest (ties: tree
    name order) into that commit's parents, never expanding a component at its basis. Merges give
    a tuple several parents. The trees are ordered by name.
    """
    trees = sorted(histories)
    hist = {t: _normalise(histories[t]) for t in trees}
    latest: Node = tuple(hist[t].latest for t in trees)
    parents: dict[Node, list[Node]] = {}
    dates: dict[Node, int] = {}
    stack = [latest]
    while stack:
        node = stack.pop()
        if node in parents:
            continue
        if len(parents) >= max_nodes:
            raise GraphError(f"revision graph exceeds {max_nodes} nodes")
        best: int | None = None
        best_date = 0
        node_date = 0
        for i, t in enumerate(trees):
            d = int(hist[t].dates.get(node[i], 0))
            node_date = max(node_date, d)
            expandable = node[i] != hist[t].basis and hist[t].parents.get(node[i])
            if expandable and (best is None or d > best_date):
                best, best_date = i, d
        dates[node] = node_date
        if best is None:
            parents[node] = []
            continue
        t = trees[best]
        ps: list[Node] = []
        for pc in hist[t].parents[node[best]]:
            if pc not in hist[t].parents and pc != hist[t].basis:
                continue  # outside the given history: this arm starts here
            ps.append(node[:best] + (pc,) + node[best + 1 :])
        parents[node] = ps
        stack.extend(ps)
    return RevGraph(trees, parents, dates)


def parse_rev_list(text: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Parse `git rev-list --parents --format=%ct <range>` into (parents, dates).

    Parents outside the listed range are dropped, so the caller's range bounds the history.
    """
    parents: dict[str, list[str]] = {}
    dates: dict[str, int] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("commit "):
            fields = line.split()[1:]
            current = fields[0]
            parents[current] = fields[1:]
        elif current is not None:
            dates[current] = int(line)
            current = None
    for c, ps in parents.items():
        parents[c] = [p for p in ps if p in parents]
    return parents, dates


def chain_graph(n: int, tree: str = "t", start_date: int = 1_000_000) -> RevGraph:
    """A single-tree linear history of n+1 commits c0 (basis) .. cn (latest)."""
    ps: dict[Node, list[Node]] = {(f"c{i}",): [(f"c{i - 1}",)] if i else [] for i in range(n + 1)}
    return RevGraph([tree], ps, {(f"c{i}",): start_date + i for i in range(n + 1)})


def intervals_of(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted integer positions -> inclusive runs [(a, b), ...]."""
    out: list[tuple[int, int]] = []
    for p in sorted(positions):
        if out and p == out[-1][1] + 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out
