"""The revision-tuple graph as SVG, in osstest's colours (spec/osstest-semantics.md §7.13).

Relevant nodes only, oldest at the bottom. A node's label is, per tree, the first 12
characters of its revision (`*starred*` where it differs from a parent), then one
`<flight>:<result>` per flight. Fill: fail red, pass green, conflicted yellow, other results
blue, untested light grey; the latest tuple is an oval, the basis a hexagon, the target
(culprit, or next probe) has a double bold border. Nodes are shaded by posterior mass when
given. Every piece of text and every URL is XML-escaped: commit hashes and flight numbers
are ours, but tree URLs and results come from config and the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from pushgate.bisect.graph import Node, RevGraph

BOX_W = 14  # px per label character (monospace at 11px is ~6.6px; two-line boxes)
ROW_H = 46
LANE_W = 40
MARGIN = 10

FILL = {
    "fail": ("red", "white"),
    "pass": ("#00c000", "black"),
    "conflicted": ("yellow", "black"),
    "other": ("blue", "white"),
    "untested": ("lightgrey", "black"),
}


@dataclass(frozen=True)
class NodeResult:
    flight: int
    result: str


def consolidate(results: Sequence[NodeResult]) -> str:
    """osstest §7.6: one non-blocked value -> it; pass and fail both -> conflicted."""
    vals = {r.result for r in results}
    if not vals:
        return "untested"
    if {"pass", "fail"} <= vals:
        return "conflicted"
    for v in ("fail", "pass"):
        if v in vals:
            return v
    return "other"


def node_label(graph: RevGraph, node: Node) -> str:
    parts = []
    parents = graph.parents(node)
    for i, rev in enumerate(node):
        short = rev[:12]
        if any(p[i] != rev for p in parents):
            short = f"*{short}*"
        parts.append(short)
    return ",".join(parts)


def _lanes(graph: RevGraph, nodes: set[Node], latest: Node) -> dict[Node, int]:
    """Lane 0 is the first-parent line down from the latest tuple; side arms take the next
    free lanes in topological order, so merges show as a second column."""
    lane: dict[Node, int] = {}
    n: Node | None = latest
    while n is not None and n in nodes and n not in lane:
        lane[n] = 0
        ps = [p for p in graph.parents(n) if p in nodes]
        n = ps[0] if ps else None
    nxt = 1
    for node in reversed(graph.topo_order()):
        if node in nodes and node not in lane:
            kids = [lane[c] for c in graph.children(node) if c in lane and lane[c] > 0]
            if kids:
                lane[node] = kids[0]
            else:
                lane[node] = nxt
                nxt += 1
    return lane


def render_svg(
    graph: RevGraph,
    nodes: set[Node],
    results: Mapping[Node, Sequence[NodeResult]],
    *,
    basis: Node,
    latest: Node,
    target: Node | None,
    tree_urls: Mapping[str, str],
    logs_url: str,
    mass: Mapping[Node, float] | None = None,
    title: str = "",
) -> str:
    order = [n for n in graph.topo_order() if n in nodes]
    row = {n: i for i, n in enumerate(order)}
    lanes = _lanes(graph, nodes, latest)

    # Boxes fit the longer of their two lines (revisions, then flight:result list);
    # the canvas also fits the title.
    def results_text(n: Node) -> str:
        return " ".join(f"{r.flight}:{r.result}" for r in results.get(n, ()))

    width_chars = max(
        (max(len(node_label(graph, n)), len(results_text(n))) for n in order), default=12
    )
    box_w = max(120, int(width_chars * 6.8) + 16)
    n_lanes = max(lanes.values(), default=0) + 1
    width = max(
        2 * MARGIN + box_w + (n_lanes - 1) * LANE_W + 20, 2 * MARGIN + int(len(title) * 6.8) + 10
    )
    height = 2 * MARGIN + len(order) * ROW_H + 20

    def xy(n: Node) -> tuple[float, float]:
        x = MARGIN + lanes[n] * LANE_W
        y = MARGIN + 20 + (len(order) - 1 - row[n]) * ROW_H  # oldest at the bottom
        return x, y

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
        f' width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        ' font-family="monospace" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{MARGIN}" y="{MARGIN + 10}">{escape(title)}</text>',
    ]
    for n in order:  # edges under the boxes
        x1, y1 = xy(n)
        for p in graph.parents(n):
            if p in nodes:
                x2, y2 = xy(p)
                out.append(
                    f'<line x1="{x1 + 20}" y1="{y1 + 34}" x2="{x2 + 20}" y2="{y2}" stroke="black"/>'
                )
    for n in order:
        x, y = xy(n)
        rs = sorted(results.get(n, ()), key=lambda r: r.flight)
        state = consolidate(rs)
        fill, ink = FILL[state]
        opacity = 1.0
        if mass is not None and state == "untested":
            opacity = 0.35 + 0.65 * min(1.0, mass.get(n, 0.0) * 10)
        bold = n == target
        stroke = ' stroke="black" stroke-width="3"' if bold else ' stroke="black"'
        h = 34
        if n == latest:
            shape = (
                f'<rect x="{x}" y="{y}" width="{box_w}" height="{h}" rx="{h / 2}"'
                f' fill="{fill}" fill-opacity="{opacity:.2f}"{stroke}/>'
            )
        elif n == basis:
            pts = [
                (x + 10, y),
                (x + box_w - 10, y),
                (x + box_w, y + h / 2),
                (x + box_w - 10, y + h),
                (x + 10, y + h),
                (x, y + h / 2),
            ]
            shape = (
                f'<polygon points="{" ".join(f"{a},{b}" for a, b in pts)}"'
                f' fill="{fill}" fill-opacity="{opacity:.2f}"{stroke}/>'
            )
        else:
            shape = (
                f'<rect x="{x}" y="{y}" width="{box_w}" height="{h}"'
                f' fill="{fill}" fill-opacity="{opacity:.2f}"{stroke}/>'
            )
        out.append(f'<g class="node {state}">')
        out.append(shape)
        if bold:  # the double border
            out.append(
                f'<rect x="{x + 3}" y="{y + 3}" width="{box_w - 6}" height="{h - 6}"'
                ' fill="none" stroke="black"/>'
            )
        weight = ' font-weight="bold"' if bold else ""
        # Line 1: revisions, each linking to <tree url>#<commit>.
        out.append(f'<text x="{x + 8}" y="{y + 14}" fill="{ink}"{weight}>')
        parents = graph.parents(n)
        for i, rev in enumerate(n):
            t = graph.trees[i]
            short = rev[:12]
            if any(p[i] != rev for p in parents):
                short = f"*{short}*"
            sep = "," if i else ""
            href = quoteattr(f"{tree_urls.get(t, '')}#{rev}")
            out.append(f"{sep}<a xlink:href={href} href={href}><tspan>{escape(short)}</tspan></a>")
        out.append("</text>")
        out.append(f'<text x="{x + 8}" y="{y + 28}" fill="{ink}"{weight}>')
        for i, r in enumerate(rs):
            href = quoteattr(f"{logs_url.rstrip('/')}/{r.flight}/")
            sep = " " if i else ""
            out.append(
                f"{sep}<a xlink:href={href} href={href}><tspan>"
                f"{escape(f'{r.flight}:{r.result}')}</tspan></a>"
            )
        out.append("</text></g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
