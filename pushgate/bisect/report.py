"""The bisection mail in osstest's format (spec/osstest-semantics.md §7.12-§7.14, design §7).

The summary (Tree lines and the `***` block) comes first, then the graph link, then, between
two 40-dash lines, the trace: the endpoints, the tuples, every flight's result at its tuple
(`Searching for test results:`), and the summary again, as `cs-bisection-step` prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pushgate import paths
from pushgate.bisect.graph import GraphError, Node, RevGraph
from pushgate.bisect.posterior import Observation
from pushgate.bisect.result import BisectResult, TraceRow
from pushgate.bisect.search import Outcome
from pushgate.bisect.svg import NodeResult, render_svg
from pushgate.config import Loaded
from pushgate.db import bisections as dbb
from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.git import GitError
from pushgate.paths import mirror
from pushgate.publish.mail.message import (
    build_message,
    envelope_recipients,
    make_message_id,
    serialize,
    thread_to_report,
)
from pushgate.publish.mail.outbox import enqueue

DASHES = "-" * 40

HEADLINE = {
    "complete": "*** Found and reproduced problem changeset ***",
    "inconsistent": "*** Found and reproduced problem changeset ***",
    "flake": "*** Failure not reproduced: classified as flake ***",
    "inconclusive": "*** Exact problem changeset not identified ***",
    "unreproducible": "*** Not reproducible - supposed basis pass ***",
}


def graph_relpath(row: dbb.BisectionRow) -> str:
    return paths.bisect_graph_relpath(row.branch, row.job, row.testid)


def subject(row: dbb.BisectionRow, kind: str) -> str:
    return f"[{row.branch} bisection] {kind} {row.job}"


def _revs(node: Node) -> str:
    return " ".join(node)


def _results_by_node(trace: Sequence[TraceRow]) -> dict[Node, list[NodeResult]]:
    out: dict[Node, list[NodeResult]] = {}
    for t in trace:
        out.setdefault(t.node, []).append(NodeResult(t.flight, t.result))
    return out


def write_graph(
    loaded: Loaded,
    row: dbb.BisectionRow,
    graph: RevGraph,
    trace: Sequence[TraceRow],
    out: Outcome | None,
    mass: dict[Node, float] | None = None,
) -> Path | None:
    """Write the SVG next to the logs; None when the graph has no basis-to-latest part."""
    basis = tuple(row.basis[t] for t in graph.trees)
    latest = tuple(row.latest[t] for t in graph.trees)
    try:
        nodes = graph.relevant(basis, latest)
    except GraphError:
        return None
    svg = render_svg(
        graph,
        nodes,
        _results_by_node(trace),
        basis=basis,
        latest=latest,
        target=out.culprit if out is not None else None,
        tree_urls={t: loaded.trees[t].url for t in graph.trees if t in loaded.trees},
        logs_url=paths.logs_url(loaded),
        title=f"{row.branch} {row.job} {row.testid}",
        mass=mass,
    )
    path = paths.log_path(loaded, graph_relpath(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".svg.tmp")
    tmp.write_text(svg, encoding="utf-8")
    tmp.replace(path)
    return path


def _commit_log(loaded: Loaded, tree: str, parent: str, commit: str) -> list[str]:
    """`git log parent..commit`, indented two spaces as in osstest's mail."""
    try:
        text = mirror(loaded, tree).revision_log(parent, commit)
    except GitError as e:
        return [f"  (no revision log: {e})"]
    return [f"  {line}" for line in text.rstrip("\n").splitlines()]


def summary_lines(
    loaded: Loaded,
    row: dbb.BisectionRow,
    graph: RevGraph,
    out: Outcome,
    res: BisectResult,
    obs: Sequence[Observation],
) -> list[str]:
    lines = [
        f"Tree: {t} {loaded.trees[t].url if t in loaded.trees else ''}".rstrip()
        for t in graph.trees
    ]
    lines.append("")
    kind = out.kind
    evidence = f"f={out.f_mean:.2f} eps~{out.eps_mean:.2f}; {evidence_counts(res)}; on {row.host}"
    post = f"P(flake)={out.p_flake:.5f} P(env)={out.p_env:.5f}"
    if kind in ("complete", "inconsistent") and out.culprit is not None:
        lines += [HEADLINE[kind], ""]
        fails = [t.flight for t in res.trace if t.node == out.culprit and t.result == "fail"]
        url = loaded.trees[res.culprit_tree].url if res.culprit_tree in loaded.trees else ""
        lines.append(f"  Bug is in tree:  {res.culprit_tree} {url}".rstrip())
        lines.append(f"  Bug introduced:  {res.culprit_commit}")
        for p in res.not_present:
            lines.append(f"  Bug not present: {p}")
        if fails:
            lines.append(f"  Last fail repro: {paths.logs_url(loaded)}/{max(fails)}/")
        lines.append(f"  Posterior:       P(culprit)={out.confidence:.5f} {post}")
        lines.append(f"  Evidence:        {evidence}")
        lines += ["", ""]
        if res.culprit_tree and res.culprit_commit and res.not_present:
            lines += _commit_log(loaded, res.culprit_tree, res.not_present[0], res.culprit_commit)
        if kind == "inconsistent":
            lines += [
                "",
                "*** HOWEVER - WARNING - INCONSISTENT TEST RESULTS ***",
                "",
                "  Some revisions produced unstable test results,",
                "  so interpret the results with caution.",
                f"  ({out.reason})",
                "  See revision graph output for details.",
            ]
    elif kind == "flake":
        latest = tuple(row.latest[t] for t in graph.trees)
        at_l = [t for t in res.trace if t.node == latest and t.kind != "history"]
        n_fail = sum(t.result == "fail" for t in at_l)
        passed = ", ".join(str(t.flight) for t in at_l if t.result == "pass")
        lines += [
            HEADLINE[kind],
            "",
            f"  Flaky step:      {row.job} {row.testid}",
            f"  Latest tuple:    {n_fail} fail / {len(at_l)} runs on {row.host}"
            f" (pass in {passed or 'none'})",
            f"  Posterior:       {post}",
            f"  Evidence:        {evidence}",
        ]
    elif kind == "inconclusive":
        lines += [HEADLINE[kind], "", "  See revision graph output for details."]
        if out.credible:
            lines.append("  Credible set (90% of the posterior mass):")
            lines += [f"    {_revs(n)}" for n in out.credible]
        lines.append(f"  Posterior:       P(top)={out.confidence:.5f} {post}")
        lines.append(f"  Evidence:        {evidence}; {out.reason}")
    elif kind == "unreproducible":
        lines += [
            HEADLINE[kind],
            "",
            "Could not reproduce problem, or could not reproduce basis pass.",
            f"  Posterior:       {post}",
            f"  Evidence:        {evidence}",
        ]
    else:  # doubtful
        lines += [
            "",
            out.reason or "No appropriate failure/pass pair found.",
            "",
            "Sorry, bisection not possible.",
            "",
        ]
    return lines


def evidence_counts(res: BisectResult) -> str:
    """The counts of the Evidence line, from the trace the mail prints: the probe runs, the
    probe flights they ran in (and the bisections those flights were shared with), and the
    earlier results (the trigger and branch history)."""
    probes = [t for t in res.trace if t.kind == "probe"]
    flights = sorted({t.flight for t in probes})
    text = f"runs {len(probes)} in {len(flights)} probe flights"
    if flights:
        text += f" ({flights[0]}..{flights[-1]})" if len(flights) > 1 else f" ({flights[0]})"
    if res.shared_with:
        text += f" shared with bisection {', '.join(map(str, res.shared_with))}"
    return text + f", {len(res.trace) - len(probes)} earlier results"


def render(
    loaded: Loaded,
    row: dbb.BisectionRow,
    graph: RevGraph,
    out: Outcome,
    res: BisectResult,
    obs: Sequence[Observation],
) -> tuple[str, str]:
    """(subject, body) of the outcome mail."""
    head = [f"branch {row.branch}", f"job {row.job}", f"testid {row.testid}"]
    if row.latest_flight is not None:  # the flight whose regression this bisects
        head.append(
            f"flight {row.latest_flight} {paths.flight_logs_url(loaded, row.latest_flight)}"
        )
    head.append("")
    summary = summary_lines(loaded, row, graph, out, res, obs)
    body = head + summary + [""]
    if out.kind != "doubtful" and res.svg_path is not None:
        body += [
            "",
            "For bisection revision-tuple graph see:",
            f"   {paths.logs_url(loaded)}/{graph_relpath(row)}",
            "Revision IDs in each graph node refer, respectively, to the Trees above.",
            "",
        ]
    basis = tuple(row.basis.get(t, "") for t in graph.trees)
    latest = tuple(row.latest.get(t, "") for t in graph.trees)
    trace = [
        DASHES,
        f"Running pushgate bisect {row.branch} {row.job} {row.testid}",
        "Searching for failure / basis pass:",
        f" {row.latest_flight or '-'} fail [host={row.host}] / {row.basis_flight or '-'} ok.",
        f"Failure / basis pass flights: {row.latest_flight or '-'} / {row.basis_flight or '-'}",
    ]
    trace += [
        f"Tree: {t} {loaded.trees[t].url if t in loaded.trees else ''}".rstrip()
        for t in graph.trees
    ]
    trace += [
        f"Latest {_revs(latest)}",
        f"Basis pass {_revs(basis)}",
        f"Loaded {len(graph)} nodes in revision graph",
        "Searching for test results:",
    ]
    trace += [f" {t.flight} {t.result} {_revs(t.node)}" for t in res.trace]
    trace += [""] + summary[len(graph.trees) + 1 :]
    if res.svg_path is not None:
        trace.append(f"Revision graph left in {res.svg_path}.")
    trace.append(DASHES)
    return subject(row, out.kind), "\n".join(body + trace) + "\n"


def enqueue_mail(db: Database, loaded: Loaded, row: dbb.BisectionRow, res: BisectResult) -> bool:
    """Queue the outcome mail once per bisection, threaded to the failing flight's report."""

    br = loaded.branches.get(row.branch)
    if br is None:
        return False
    to = list(br.bisect_mail_to if br.bisect_mail_to is not None else br.mail_to)
    if not to:
        return False
    domain = loaded.cfg.mail.domain
    mid = make_message_id(f"bisection-{row.id}", row.latest_flight or 0, domain)
    # Thread under the report that showed the failure: a retest has none of its own.
    reply: str | None = None
    refs: list[str] = []
    if row.latest_flight:
        with db.read() as conn:
            reported = dbf.reported_in(conn, row.latest_flight)
        reply, refs = thread_to_report(reported, domain)
    msg = build_message(
        subject=res.subject,
        body=res.body,
        from_addr=loaded.cfg.mail.from_addr,
        to=to,
        cc=[],
        message_id=mid,
        in_reply_to=reply,
        references=refs,
        extra_headers={},
    )
    return enqueue(
        db,
        message_id=mid,
        kind="bisection",
        flight=row.latest_flight,
        data=serialize(msg),
        recipients=envelope_recipients(to),
    )
