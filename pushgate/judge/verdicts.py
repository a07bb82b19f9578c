"""Judge a flight once and store its verdict; read the stored verdict back.

The verdict of a flight made by a gate cycle is recorded when the flight and its retest
have finished, in the transaction that moves the cycle on to its push stage; any other
finished flight's verdict is recorded the first time something asks for it (its first
report). Everything after (gate decision, report, mail, HTML, JSON, bisector, web pages,
statistics) reads the stored verdict, so a report printed a year later is the one that
was mailed. `judge` alone recomputes against today's history and stores nothing
(`pushgate report N --now`).

The classification compares the flight's targeted revision of the tree under test
("this") with the baseline recorded when the gate made the flight ("that", from
`gate_cycles`, or the tested-ref tip stored in `flight_revisions` for a flight made by
hand). A retest flight made for it is referred to, so one verdict covers both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection

from pushgate import paths
from pushgate.config import Loaded
from pushgate.db import cycles as dbc
from pushgate.db import flights as dbf
from pushgate.db import verdicts as dbv
from pushgate.db.engine import Database
from pushgate.errors import PushgateError
from pushgate.git import Commit, GitError
from pushgate.judge.classify import classify
from pushgate.judge.verdict import AgeLine, Classification, PushAge, Verdict, failure_kind
from pushgate.model import FINAL_JOB_STATUSES

BLESSINGS = ("real", "real-retest")


class NoSuchFlight(PushgateError):
    def __init__(self, flight: int) -> None:
        super().__init__(f"flight {flight} does not exist")


@dataclass
class Versions:
    tree: str
    this: dict[str, str]
    that: dict[str, str]
    mode: str = "normal"
    retest_flight: int | None = None


def flight_versions(db: Database, loaded: Loaded, flight: int) -> Versions:
    """this/that of the flight's verdict (see the module doc)."""
    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
        if info is None:
            raise NoSuchFlight(flight)
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
    """The flight's classification against today's history (computed, not stored)."""
    v = versions or flight_versions(db, loaded, flight)
    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
        if info is None:
            raise NoSuchFlight(flight)
        refer = []
        if v.retest_flight is not None and dbc.flight_finished(conn, v.retest_flight):
            refer.append(v.retest_flight)
    allow = loaded.branches[info.branch].allow if info.branch in loaded.branches else []
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


def _git_facts(
    loaded: Loaded, tree: str, base: str | None, target: str | None
) -> tuple[list[str], list[Commit], str | None]:
    """People who touched base..target, its commits and its `git log` text."""
    if not (tree and target and base and target != base and tree in loaded.trees):
        return [], [], None
    m = paths.mirror(loaded, tree)
    try:
        if m.exists() and m.has_commit(base) and m.has_commit(target):
            return (
                m.people_touched(base, target),
                m.log_range(base, target),
                (m.revision_log_text(base, target)),
            )
    except GitError:
        pass  # a verdict without people or log beats no verdict
    return [], [], None


def judge(db: Database, loaded: Loaded, flight: int, *, now: float | None = None) -> Verdict:
    """Classify the flight against today's history; nothing is stored."""
    now = time.time() if now is None else now
    v = flight_versions(db, loaded, flight)
    with db.read() as conn:
        finished = dbc.flight_finished(conn, flight)
        jobs = dbf.get_jobs(conn, flight)
    statuses = [j.status for j in jobs]
    # A job run with runner.isolation = "none" carries the runvar isolation=none.
    isolated = all(j.runvars.get("isolation") != "none" for j in jobs)
    c = classify_flight(db, loaded, flight, v)
    tree = v.tree
    people, commits, revlog = _git_facts(loaded, tree, v.that.get(tree), v.this.get(tree))
    return Verdict(
        classification=c,
        tree=tree,
        mode=v.mode,
        retest_flight=v.retest_flight,
        complete=finished,
        decided=now,
        push_age=push_age(db, c.branch, flight, v, datetime.fromtimestamp(now, UTC)),
        people=people,
        commits=commits,
        revision_log=revlog,
        isolated=isolated,
        jobs_total=len(statuses),
        jobs_finished=sum(s in FINAL_JOB_STATUSES for s in statuses),
    )


def _rows(vd: Verdict) -> tuple[dbv.VerdictRow, list[dbv.FailureRow]]:
    c = vd.classification
    row = dbv.VerdictRow(
        flight=c.flight,
        branch=c.branch,
        created=vd.decided,
        outcome=c.outcome,
        subject_prefix=c.subject_prefix,
        verdict=c.verdict,
        blocking=c.blocking,
        mode=vd.mode,
        retest_flight=vd.retest_flight,
        doc=json.dumps(vd.to_json(), sort_keys=True),
    )
    failures = [
        dbv.FailureRow(
            flight=c.flight,
            seq=i,
            job=f.job,
            stepno=f.stepno,
            testid=f.testid,
            status=f.status,
            kind=failure_kind(f),
            in_flight=f.in_flight,
            reference_flight=f.reference_flight,
            passed_in=f.passed_in,
            blocks=f.blocking,
            annotation=f.annotation,
        )
        for i, f in enumerate(c.all_failures)
    ]
    return row, failures


def _load(row: dbv.VerdictRow) -> Verdict:
    return Verdict.from_json(json.loads(row.doc))


def stored(db: Database, flight: int) -> Verdict | None:
    """The flight's stored verdict, or None if it was never judged."""
    with db.read() as conn:
        row = dbv.get_verdict(conn, flight)
    return _load(row) if row is not None else None


def record(
    db: Database,
    loaded: Loaded,
    flight: int,
    *,
    also: Callable[[Connection], None] | None = None,
) -> Verdict:
    """Judge a finished flight and store its verdict, once: a flight judged already keeps
    its verdict (returned as stored). `also` runs in the same write transaction (the
    cycle's move to its push stage), whether or not the verdict was new."""
    with db.read() as conn:
        row = dbv.get_verdict(conn, flight)
    vd = _load(row) if row is not None else judge(db, loaded, flight)
    if not vd.complete:
        raise PushgateError(f"flight {flight} has not finished: it has no verdict yet")
    with db.write() as conn:
        if row is None:
            vrow, frows = _rows(vd)
            if not dbv.insert_verdict(conn, vrow, frows):
                # Another process judged it first: its verdict stands.
                got = dbv.get_verdict(conn, flight)
                assert got is not None
                vd = _load(got)
        if also is not None:
            also(conn)
    return vd


def for_report(db: Database, loaded: Loaded, flight: int) -> Verdict:
    """The stored verdict; a finished flight never judged is judged and stored now; a
    flight still running gets an unstored, incomplete verdict."""
    vd = stored(db, flight)
    if vd is not None:
        return vd
    vd = judge(db, loaded, flight)
    if not vd.complete:
        return vd
    return record(db, loaded, flight)
