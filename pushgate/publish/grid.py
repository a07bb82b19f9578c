"""The flight grid (osstest's: rows are testids, columns jobs) and flight listings."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.model import flight_outcome
from pushgate.redact import inert, redact_url

STYLE = {
    "pass": "green",
    "fail": "bold red",
    "broken": "magenta",
    "blocked": "yellow",
    "starved": "yellow",
    "running": "cyan",
    "queued": "dim",
    "preparing": "cyan",
    "aborted": "red",
    "skip": "dim",
}


def flight_data(db: Database, flight: int) -> dict[str, Any] | None:
    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
        if info is None:
            return None
        jobs = dbf.get_jobs(conn, flight)
        steps = dbf.get_steps(conn, flight)
        bases = dbf.flight_baselines(conn, flight)
    by_job: dict[str, list[dict[str, Any]]] = {}
    for s in steps:
        by_job.setdefault(s.job, []).append(
            {
                "stepno": s.stepno,
                "testid": s.testid,
                "status": s.status,
                "fatal": s.fatal,
                "started": s.started,
                "finished": s.finished,
                "log": s.log,
            }
        )
    return {
        "flight": info.flight,
        "branch": info.branch,
        "blessing": info.blessing,
        "intended": info.intended,
        "created": info.created,
        "started": info.started,
        "finished": info.finished,
        "revisions": info.revisions,
        "baselines": bases,
        "outcome": flight_outcome([j.status for j in jobs]) if jobs else None,
        "jobs": [
            {
                "job": j.job,
                "status": j.status,
                "host": j.host,
                "started": j.started,
                "finished": j.finished,
                # Flights made before tree URLs were redacted at construction kept them.
                "runvars": {k: redact_url(v) for k, v in j.runvars.items()},
                "steps": by_job.get(j.job, []),
            }
            for j in jobs
        ],
    }


def _cell(status: str | None) -> Text:
    if status is None:
        return Text("")
    return Text(_t(status), style=STYLE.get(status, ""))


def _t(text: str) -> str:
    """A grid field as printed: job names, testids (JUnit substeps come from test output)
    and statuses have their terminal control characters shown escaped."""
    return inert(text, multiline=False)


def render_grid(console: Console, db: Database, flight: int) -> None:
    data = flight_data(db, flight)
    if data is None:
        console.print(f"flight {flight} does not exist")
        return
    revs = " ".join(f"{t}={r[:12]}" for t, r in data["revisions"].items())
    console.print(
        Text(
            _t(f"flight {flight} {data['branch']} {data['blessing']} [{data['intended']}]  {revs}")
        )
    )
    jobs = data["jobs"]
    # testid order: first appearance by step number across jobs.
    order: dict[str, int] = {}
    for j in jobs:
        for s in j["steps"]:
            order.setdefault(s["testid"], s["stepno"])
    testids = sorted(order, key=lambda t: (order[t], t))
    width = (
        sum(max(len(j["job"]), 7) + 3 for j in jobs) + max((len(t) for t in testids), default=5) + 8
    )
    if width <= console.width:
        t = Table(title=None, show_lines=False)
        t.add_column("testid")
        for j in jobs:
            t.add_column(_t(j["job"]), overflow="fold")
        t.add_row(Text("(job)", style="bold"), *[_cell(j["status"]) for j in jobs])
        for tid in testids:
            cells = []
            for j in jobs:
                st = next((s for s in j["steps"] if s["testid"] == tid), None)
                cells.append(_cell(st["status"]) if st else Text(""))
            t.add_row(Text(_t(tid)), *cells)
    else:
        # Too wide: one row per job, its steps listed in order.
        t = Table(show_lines=False)
        t.add_column("job")
        t.add_column("status")
        t.add_column("steps")
        for j in jobs:
            steps = Text()
            for s in j["steps"]:
                steps.append(_t(f"{s['stepno']} {s['testid']} "))
                steps.append(_t(s["status"]), style=STYLE.get(s["status"], ""))
                steps.append("  ")
            t.add_row(Text(_t(j["job"])), _cell(j["status"]), steps)
    console.print(t)
    if data["outcome"]:
        console.print(Text(f"outcome: {data['outcome']}"))


def render_flight_list(console: Console, db: Database, branch: str | None, limit: int) -> None:
    with db.read() as conn:
        rows = dbf.list_flights(conn, branch, limit)
        statuses = {f.flight: [j.status for j in dbf.get_jobs(conn, f.flight)] for f in rows}
    t = Table()
    for c in ("flight", "branch", "blessing", "created", "outcome"):
        t.add_column(c)
    for f in rows:
        st = statuses[f.flight]
        t.add_row(
            str(f.flight),
            Text(_t(f.branch)),
            Text(_t(f.blessing)),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(f.created)),
            flight_outcome(st) if st else "",
        )
    console.print(t)
