"""The bisection graph SVG: osstest's colours and shapes, and every text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pushgate.bisect.graph import RevGraph, chain_graph
from pushgate.bisect.svg import NodeResult, consolidate, node_label, render_svg

NS = "{http://www.w3.org/2000/svg}"


def _svg(graph: RevGraph, **kw: object) -> str:
    nodes = graph.nodes
    results = {
        nodes[0]: [NodeResult(1, "pass")],
        nodes[1]: [NodeResult(3, "pass"), NodeResult(4, "fail")],
        nodes[3]: [NodeResult(5, "fail")],
        nodes[4]: [NodeResult(6, "broken")],
        nodes[-1]: [NodeResult(2, "fail")],
    }
    args: dict[str, object] = {
        "basis": nodes[0],
        "latest": nodes[-1],
        "target": nodes[3],
        "tree_urls": {"t": "https://example.org/t.git"},
        "logs_url": "http://logs/x",
    }
    args.update(kw)
    return render_svg(graph, set(nodes), results, **args)  # type: ignore[arg-type]


def test_colours_shapes_and_labels() -> None:
    g = chain_graph(6)
    svg = _svg(g)
    root = ET.fromstring(svg)
    groups = [e for e in root.iter(f"{NS}g")]
    states = [e.get("class") for e in groups]
    # Oldest at the bottom: the groups come in topological order c0..c6.
    assert states == [
        "node pass",
        "node conflicted",
        "node untested",
        "node fail",
        "node other",
        "node untested",
        "node fail",
    ]
    fills = {e.get("class"): e[0].get("fill") for e in groups}
    assert fills == {
        "node pass": "#00c000",
        "node conflicted": "yellow",
        "node untested": "lightgrey",
        "node fail": "red",
        "node other": "blue",
    }
    assert groups[0][0].tag == f"{NS}polygon"  # basis: hexagon
    assert groups[-1][0].get("rx") is not None  # latest: oval
    assert groups[3][0].get("stroke-width") == "3"  # target: bold, double border
    assert groups[3][1].tag == f"{NS}rect" and groups[3][1].get("fill") == "none"
    ys = [
        float(e[0].get("y") or e[0].get("points", "0,0").split()[0].split(",")[1]) for e in groups
    ]
    assert ys == sorted(ys, reverse=True)
    assert "3:pass" in svg and "4:fail" in svg and 'href="http://logs/x/4/"' in svg
    assert node_label(g, g.nodes[2]) == "*c2*"
    assert node_label(g, g.nodes[0]) == "c0"


def test_consolidate_as_osstest() -> None:
    assert consolidate([]) == "untested"
    assert consolidate([NodeResult(1, "pass"), NodeResult(2, "fail")]) == "conflicted"
    assert consolidate([NodeResult(1, "broken"), NodeResult(2, "fail")]) == "fail"
    assert consolidate([NodeResult(1, "broken")]) == "other"


def test_hostile_text_is_escaped() -> None:
    evil = '"><script>alert(1)</script><x a="'
    g = RevGraph(["t<&>"], {("a&b",): [], ("<c>",): [("a&b",)]}, {("a&b",): 1, ("<c>",): 2})
    nodes = g.nodes
    svg = render_svg(
        g,
        set(nodes),
        {nodes[1]: [NodeResult(7, "fail<b>")]},
        basis=nodes[0],
        latest=nodes[1],
        target=None,
        tree_urls={"t<&>": evil},
        logs_url=evil,
        title=f"branch {evil} testid a/<b>&c",
    )
    assert "<script" not in svg and "<b>" not in svg and "<c>" not in svg
    root = ET.fromstring(svg)  # still well-formed XML
    texts = "".join(root.itertext())
    assert "<script>" in texts and "a&b" in texts and "7:fail<b>" in texts
    hrefs = [e.get("href") for e in root.iter(f"{NS}a")]
    assert f"{evil}#<c>" in hrefs
