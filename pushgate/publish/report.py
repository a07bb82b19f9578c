"""A flight's report, rendered from its stored verdict and the gate's stored decision.

Nothing here classifies: the verdict comes from `judge.verdicts` (stored once; `--now`
asks it to recompute against today's history, stored nowhere), the push part from the
recorded push decision. Renderings: the mail (subject, body, headers), a JSON document
and the static HTML pages.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushgate import paths
from pushgate.config import Loaded
from pushgate.db import bisections as dbb
from pushgate.db import flights as dbf
from pushgate.db import mailqueue as dbm
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.errors import PushgateError
from pushgate.gate.push import PUSHED_STATUSES
from pushgate.judge.verdict import Classification, Verdict
from pushgate.judge.verdicts import NoSuchFlight, for_report
from pushgate.judge.verdicts import judge as judge_now
from pushgate.paths import job_artifacts
from pushgate.publish.html import (
    ArtifactData,
    FlightData,
    JobData,
    RunvarData,
    StepData,
    write_html,
)
from pushgate.publish.jsonout import render_json
from pushgate.publish.mail.message import parse
from pushgate.publish.text import (
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
NOT_ISOLATED_PARAGRAPH = (
    'steps not isolated: this flight\'s steps ran with runner.isolation = "none", so the\n'
    "code under test could reach pushgate's state."
)


class ReportError(PushgateError):
    """The flight cannot be reported (it does not exist, ...)."""


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
    note: str | None = None
    """Said before the report (e.g. that it was recomputed, not as decided)."""
    after: str | None = None
    """Said apart from the report (on stderr): what changed since it was mailed."""

    def mail_text(self) -> str:
        """Subject and extra headers in osstest's unfolded shape, a blank line, the body."""
        head = [f"Subject: {self.subject}"]
        for name, value in self.headers.items():
            head.append(f"{name}:")
            head += [f"    {item}" for item in value.split("\n")]
        return "\n".join(head) + "\n\n" + self.body


def push_part(row: dbp.PushRow | None) -> tuple[str, str | None]:
    """(the report's push part §5.9, push state for the subject: `pushed` or None)."""
    if row is None or row.status == "pending":
        return push_part_text("not-pushed"), None
    if row.status in PUSHED_STATUSES:
        return push_part_text("pushed", revision=row.revision, output=row.output), "pushed"
    if row.status == "refused":
        return f"Pushing revision {row.revision}:\n\n{row.output.rstrip()}\n", None
    if row.status == "failed":
        return (
            f"Pushing revision {row.revision}:\n\n{row.output.rstrip()}\n\n"
            "The push failed; a later cycle tries it again, unless a newer flight\n"
            "supersedes this one.\n"
        ), None
    if row.status == "up-to-date":
        return push_part_text("up-to-date"), None
    if row.status == "not-applicable":
        return push_part_text("not-applicable"), None
    if row.why and row.why.startswith("blocked"):
        by = f" by {row.decided_by}" if row.decided_by else ""
        return f"Not pushing: {row.why.replace('blocked', 'blocked' + by, 1)}\n", None
    return push_part_text("not-pushed"), None


def build_report(db: Database, loaded: Loaded, flight: int, *, now: bool = False) -> BuiltReport:
    """Flight N's report as decided (its stored verdict), or with now=True recomputed
    against today's history."""
    try:
        vd = judge_now(db, loaded, flight) if now else for_report(db, loaded, flight)
    except NoSuchFlight as e:
        raise ReportError(str(e)) from None
    with db.read() as conn:
        row = dbp.get_push(conn, flight)
    rep = render_report(loaded, vd, row)
    if not now:
        rep = _as_mailed(db, rep)
    if now:
        rep.note = (
            f"Recomputed now against today's history; the report as decided and mailed "
            f"is `pushgate report {flight}`."
        )
        rep.data["recomputed"] = True
    return rep


def _as_mailed(db: Database, rep: BuiltReport) -> BuiltReport:
    """The report as it was mailed, when it was: its subject and body are the mail's own
    (so `report N` a year later prints what went out, byte for byte); a push decided again
    since (a retry, a push after unblock) is said in `after`, not mixed into it."""
    with db.read() as conn:
        mails = [m for m in dbm.list_mail(conn, rep.flight) if m.kind == "report"]
    if not mails:
        return rep
    msg = parse(mails[0].message.encode("utf-8"))
    payload = msg.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return rep
    subject, body = str(msg["Subject"]), payload.decode("utf-8")
    if (subject, body) != (rep.subject, rep.body):
        rep.after = (
            f"Since this report was mailed, flight {rep.flight}'s push was decided again: "
            f"now {rep.subject!r}."
        )
    rep.subject, rep.body = subject, body
    rep.data["mailed_subject"] = subject
    return rep


def _running_report(vd: Verdict) -> BuiltReport:
    c = vd.classification
    subject = f"[{c.branch} test] {c.flight}: running"
    lines = [
        f"flight {c.flight} {c.branch} {c.blessing}",
        "",
        f"This flight is still running: {vd.jobs_finished} of {vd.jobs_total} jobs have finished.",
        "It has no verdict yet; its report is made when it has finished.",
        "",
        "jobs:",
        *(f" {j.job:<50} {j.status}" for j in c.jobs),
    ]
    data = {
        "flight": c.flight,
        "branch": c.branch,
        "running": True,
        "subject": subject,
        "jobs_total": vd.jobs_total,
        "jobs_finished": vd.jobs_finished,
        "jobs": [{"job": j.job, "status": j.status} for j in c.jobs],
        "failures": [],
    }
    return BuiltReport(
        c.flight, c.branch, subject, "\n".join(lines) + "\n", {}, c, None, vd.mode, data
    )


def render_report(loaded: Loaded, vd: Verdict, row: dbp.PushRow | None) -> BuiltReport:
    """Render a verdict and a push decision (no database, no git: the same inputs give
    the same bytes, whenever they are rendered)."""
    if not vd.complete:
        return _running_report(vd)
    c = vd.classification
    part: str | None
    if row is not None:
        part, state = push_part(row)
    else:
        part, state = None, None
    ctx = ReportContext(
        logs_url=paths.logs_url(loaded),
        push_age=vd.push_age,
        people=vd.people or None,
        push_part=part,
        revision_log=vd.revision_log if state != "pushed" else None,
        report_host=socket.gethostname(),
        logs_dir=str(loaded.logs_dir),
        commits=list(vd.commits),
    )
    body = render_text(c, ctx)
    if not vd.isolated:
        body = NOT_ISOLATED_PARAGRAPH + "\n\n" + body
    kind = "test"
    if vd.mode == "baseline-test":
        kind = "baseline test"
        body = BASELINE_TEST_PARAGRAPH + "\n\n" + body
    subject = render_subject(c, state, kind=kind)
    headers = render_headers(c)
    data = render_json(c, ctx, state)
    data["subject"] = subject
    data["mode"] = vd.mode
    data["retest_flight"] = vd.retest_flight
    data["decided"] = vd.decided
    data["isolated"] = vd.isolated
    data["push"] = (
        None
        if row is None
        else {
            "status": row.status,
            "revision": row.revision,
            "expected_old": row.expected_old,
            "output": row.output,
            "why": row.why,
            "decided_by": row.decided_by,
            "pushed": state == "pushed",
        }
    )
    return BuiltReport(c.flight, c.branch, subject, body, headers, c, state, vd.mode, data)


def write_flight_html(
    db: Database, loaded: Loaded, flight: int, out_dir: Path, rep: BuiltReport | None = None
) -> list[Path]:
    """The flight's HTML pages (report.html's renderer) in out_dir, linking to its logs."""

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
        rel = paths.bisect_graph_relpath(b.branch, b.job, b.testid)
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
                        # No link to a log that is gone (`pushgate gc` deleted it).
                        s.log.removeprefix(prefix)
                        if s.log and paths.log_path(loaded, s.log).is_file()
                        else None,
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
