"""The machine-readable report (`pushgate report N --json`): a JSON-ready dict.

Same facts as the mail text, plus what the text leaves implicit: the blocker kind of each
failure (osstest's X-...-Failures says `regression` for any blocker, wart §9 #11), the
reference flights, the examined heisen flights and the commits under test.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pushgate.git import Commit
from pushgate.judge.verdict import Classification, Failure
from pushgate.publish.text import AgeLine, PushAge, ReportContext, render_subject

SCHEMA_VERSION = 1


def failure_json(f: Failure) -> dict[str, Any]:
    return {
        "job": f.job,
        "stepno": f.stepno,
        "testid": f.testid,
        "status": f.status,
        "annotation": f.annotation,
        "summary": f.summary,
        "category": f.category,
        "analysis": f.analysis,
        "blocker": f.blocker,
        "blocking": f.blocking,
        "heisen": f.heisen,
        "allowed": f.allowed,
        "whole_job": f.whole_job,
        "flight": f.flight,
        "in_flight": f.in_flight,
        "reference_flights": {
            "reference": f.reference_flight,
            "reference_label": f.reference_label,
            "regression_vs": f.regression_vs,
            "passed_in": f.passed_in,
        },
    }


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _age(line: AgeLine | None) -> dict[str, Any] | None:
    if line is None:
        return None
    return {"flight": line.flight, "started": _iso(line.started), "attempts": line.attempts}


def push_age_json(age: PushAge | None) -> dict[str, Any] | None:
    if age is None:
        return None
    return {
        "basis": _age(age.basis),
        "failing_since": _age(age.failing_since),
        "testing_same_since": _age(age.same_since),
        "now": _iso(age.now),
    }


def commit_json(commit: Commit) -> dict[str, Any]:
    return {
        "sha": commit.sha,
        "parents": list(commit.parents),
        "author": commit.author,
        "author_date": _iso(commit.author_date),
        "committer": f"{commit.committer_name} <{commit.committer_email}>",
        "committer_date": _iso(commit.committer_date),
        "subject": commit.subject,
        "trailers": [[k, v] for k, v in commit.trailers],
    }


def render_json(
    c: Classification, ctx: ReportContext | None = None, push_state: str | None = None
) -> dict[str, Any]:
    """Everything a tool needs to act on the report; json.dumps-able as is."""
    ctx = ctx or ReportContext(logs_url="")
    return {
        "schema": SCHEMA_VERSION,
        "flight": c.flight,
        "branch": c.branch,
        "blessing": c.blessing,
        "intended": c.intended,
        "outcome": c.outcome,
        "subject": render_subject(c, push_state),
        "verdict": c.verdict,
        "decision": {
            "blocking": c.blocking,
            "tolerable": c.tolerable,
            "perfect": c.perfect,
            "reasons": list(c.reasons),
            "blockers": sorted({f.blocker for f in c.all_failures if f.blocker}),
        },
        "failures": [failure_json(f) for f in c.failures],
        "examined_failures": len(c.all_failures),
        "versions": {"this": dict(sorted(c.this.items())), "that": dict(sorted(c.that.items()))},
        "that_flight": c.that_flight,
        "flights": [
            {"flight": r.flight, "branch": r.branch, "blessing": r.blessing, "intended": r.intended}
            for r in c.flights
        ],
        "heisen_flights": list(c.heisen_flights),
        "comparison_flights": list(c.comparison_flights),
        "jobs": [{"job": j.job, "status": j.status} for j in c.jobs],
        "push_age": push_age_json(ctx.push_age),
        "people": list(ctx.people or []),
        "commits": [commit_json(x) for x in ctx.commits],
        "logs_url": f"{ctx.logs_url.rstrip('/')}/{c.flight}/" if ctx.logs_url else None,
        "mro": list(c.mro),
    }
