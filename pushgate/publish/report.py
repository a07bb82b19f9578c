"""Gather everything one flight's report needs, from the database and git.

The classification compares the flight's targeted revision of the tree under test
("this") with the baseline recorded when the gate made the flight ("that", from
`gate_cycles`, or the tested-ref tip stored in `flight_revisions` for a flight made by
hand). A retest flight made for it is referred to, so one report covers both. The push
part comes from the recorded push decision. Renderings: the mail (subject, body,
headers) and a JSON document.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pushgate import paths
from pushgate.config import Loaded
from pushgate.db import cycles as dbc
from pushgate.db import flights as dbf
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.errors import PushgateError
from pushgate.gate.push import PUSHED_STATUSES
from pushgate.git import Commit, GitError
from pushgate.judge.classify import classify
from pushgate.judge.verdict import Classification
from pushgate.paths import job_artifacts, mirror
from pushgate.publish.jsonout import render_json
from pushgate.publish.text import (
    AgeLine,
    PushAge,
    ReportContext,
    push_part_text,
    render_headers,
    render_subject,
    render_text,
)

BASELINE_TEST_PARAGRAPH = (
    '"Old" tested version had not actually been tested; therefore in this\n'
    "flight we test it, rather than a new candidate.  The baseline, if\n"
    "any, is the most recent actually tested revision."
)
BLESSINGS = ("real", "real-retest")


class ReportError(PushgateError):
    """The flight cannot be reported (it does not exist, ...)."""


@dataclass
class Versions:
    tree: str
    this: dict[str, str]
    that: dict[str, str]
    mode: str = "normal"
    retest_flight: int | None = None


@dataclass
class BuiltReport:
    flight: int
    branch: str
    subject: str
    body: str
    headers: dict[str, str]
    classification: Classification
    push_state: str | None
    mode: str
    data: dict[str, Any] = field(default_factory=dict)

    def mail_text(self) -> str:
        """Subject and extra headers in osstest's unfolded shape, a blank line, the body."""
        head = [f"Subject: {self.subject}"]
        for name, value in self.headers.items():
            head.append(f"{name}:")
            head += [f"    {item}" for item in value.split("\n")]
        return "\n".join(head) + "\n\n" + self.body


def flight_versions(db: Database, loaded: Loaded, flight: int) -> Versions:
    """this/that for the flight's report (see the module doc)."""
    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
        if info is None:
            raise ReportError(f"flight {flight} does not exist")
        cyc = dbc.get_cycle(conn, flight)
        if cyc is not None:
            that = {cyc.tree: cyc.that_revision} if cyc.that_revision else {}
            return Versions(cyc.tree, {cyc.tree: cyc.target}, that, cyc.mode, cyc.retest_flight)
        baselines = dbf.flight_baselines(conn, flight)
    tree = loaded.branches[info.branch].tree if info.branch in loaded.branches else None
    if tree is None or tree not in info.revisions:
        tree = sorted(info.revisions)[0] if info.revisions else ""
    if not tree:
        return Versions("", {}, {})
    base = baselines.get(tree)
    return Versions(tree, {tree: info.revisions[tree]}, {tree: base} if base else {})


def classify_flight(
    db: Database, loaded: Loaded, flight: int, versions: Versions | None = None
) -> Classification:
    v = versions or flight_versions(db, loaded, flight)
    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
    assert info is not None
    allow = loaded.branches[info.branch].allow if info.branch in loaded.branches else []
    refer = []
    if v.retest_flight is not None:
        with db.read() as conn:
            if dbc.flight_finished(conn, v.retest_flight):
                refer.append(v.retest_flight)
    return classify(
        db,
        flight,
        this=v.this,
        that=v.that,
        blessings=BLESSINGS,
        allow=allow,
        refer_to_flights=refer,
        tree=v.tree or None,
    )


def push_age(db: Database, branch: str, flight: int, v: Versions, now: datetime) -> PushAge | None:
    """§5.5 over the branch's `real` flights up to this one."""
    if len(v.this) != 1 or list(v.this) != list(v.that):
        return None
    tree = v.tree
    target, base = v.this[tree], v.that[tree]
    with db.read() as conn:
        rows = dbc.branch_flight_revisions(conn, branch, tree, flight)

    def line(r: dbc.AgeFlight | None, attempts: int | None) -> AgeLine:
        if r is None:
            return AgeLine(None)
        return AgeLine(r.flight, datetime.fromtimestamp(r.started, UTC), attempts)

    basis = next((r for r in reversed(rows) if r.revision == base and r.flight != flight), None)
    after = [r for r in rows if basis is None or r.flight > basis.flight]
    failing = line(after[0], len(after)) if after else None
    same = [r for r in after if r.revision == target]
    same_line = line(same[0] if same else None, len(same) if same else None)
    return PushAge(line(basis, None), failing, same_line, now)


def push_part(row: dbp.PushRow | None) -> tuple[str, str | None]:
    """(the report's push part §5.9, push state for the subject: `pushed` or None)."""
    if row is None or row.status == "pending":
        return push_part_text("not-pushed"), None
    if row.status in PUSHED_STATUSES:
        return push_part_text("pushed", revision=row.revision, output=row.output), "pushed"
    if row.status in ("refused", "failed"):
        return f"Pushing revision {row.revision}:\n\n{row.output.rstrip()}\n", None
    if row.status == "up-to-date":
        return push_part_text("up-to-date"), None
    if row.status == "not-applicable":
        return push_part_text("not-applicable"), None
    return push_part_text("not-pushed"), None


def build_report(
    db: Database, loaded: Loaded, flight: int, *, now: datetime | None = None
) -> BuiltReport:
    now = now or datetime.now(UTC)
    v = flight_versions(db, loaded, flight)
    c = classify_flight(db, loaded, flight, v)
    with db.read() as conn:
        row = dbp.get_push(conn, flight)
    part: str | None
    if row is not None:
        part, state = push_part(row)
    else:
        part, state = None, None
    tree = v.tree
    target = v.this.get(tree)
    base = v.that.get(tree)
    people: list[str] = []
    revlog: str | None = None
    commits: list[Commit] = []
    if tree and target and base and target != base and tree in loaded.trees:
        m = mirror(loaded, tree)
        try:
            if m.exists() and m.has_commit(base) and m.has_commit(target):
                people = m.people_touched(base, target)
                if state != "pushed":
                    revlog = m.revision_log_text(base, target)
                commits = m.log_range(base, target)
        except GitError:
            pass  # a report without people or log beats no report
    ctx = ReportContext(
        logs_url=paths.logs_url(loaded),
        push_age=push_age(db, c.branch, flight, v, now),
        people=people or None,
        push_part=part,
        revision_log=revlog,
        report_host=socket.gethostname(),
        logs_dir=str(loaded.logs_dir),
        commits=list(commits),
    )
    body = render_text(c, ctx)
    kind = "test"
    if v.mode == "baseline-test":
        kind = "baseline test"
        body = BASELINE_TEST_PARAGRAPH + "\n\n" + body
    subject = render_subject(c, state, kind=kind)
    headers = render_headers(c)
    data = render_json(c, ctx, state)
    data["subject"] = subject
    data["mode"] = v.mode
    data["retest_flight"] = v.retest_flight
    data["push"] = (
        None
        if row is None
        else {
            "status": row.status,
            "revision": row.revision,
            "expected_old": row.expected_old,
            "output": row.output,
            "pushed": state == "pushed",
        }
    )
    return BuiltReport(flight, c.branch, subject, body, headers, c, state, v.mode, data)


def write_flight_html(
    db: Database, loaded: Loaded, flight: int, out_dir: Path, rep: BuiltReport | None = None
) -> list[Path]:
    """The flight's HTML pages (report.html's renderer) in out_dir, linking to its logs."""
    from pushgate.bisect.report import graph_relpath
    from pushgate.db import bisections as dbb
    from pushgate.publish.html import (
        ArtifactData,
        FlightData,
        JobData,
        RunvarData,
        StepData,
        write_html,
    )

    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
        if info is None:
            raise ReportError(f"flight {flight} does not exist")
        jobs = dbf.get_jobs(conn, flight)
        steps = dbf.get_steps(conn, flight)
        bisections = dbb.of_flight(conn, flight)

    def artifacts(job: str, listed: str) -> list[ArtifactData]:
        # Artifacts live in the artifact store, not under the logs: listed with sizes.
        out = []
        for rel in filter(None, listed.split(",")):
            p = job_artifacts(loaded, flight, job) / rel
            out.append(ArtifactData(rel, None, p.stat().st_size if p.is_file() else None))
        return out

    links = []
    for b in bisections:
        rel = graph_relpath(b)
        svg = paths.log_path(loaded, rel)
        if svg.is_file():
            culprit = f" {b.culprit_tree} {b.culprit_commit[:12]}" if b.culprit_commit else ""
            links.append(
                (
                    f"bisection of {b.job} {b.testid}: {b.status}{culprit}",
                    paths.log_url(loaded, rel),
                )
            )
    prefix = f"{flight}/"
    data = FlightData(
        flight,
        info.branch,
        info.blessing,
        info.intended,
        info.started,
        info.finished,
        dict(info.revisions),
        [
            JobData(
                j.job,
                j.status,
                [
                    StepData(
                        s.stepno,
                        s.testid,
                        s.status,
                        s.started,
                        s.finished,
                        s.log.removeprefix(prefix) if s.log else None,
                    )
                    for s in steps
                    if s.job == j.job
                ],
                [
                    RunvarData(k, v, k == "host" or k.startswith("built_revision_"))
                    for k, v in sorted(j.runvars.items())
                ],
                j.host,
                j.started,
                j.finished,
                artifacts(j.job, j.runvars.get("artifacts", "")),
            )
            for j in jobs
        ],
        links,
    )
    logs_base = paths.flight_logs_url(loaded, flight)
    return write_html(out_dir, data, rep.classification if rep else None, logs_base=logs_base)
