"""Queries of the bisector: the bisections table, a step's results per flight, build reuse."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, insert, select, update

from pushgate.db.schema import bisections, flight_revisions, flights, jobs, runvars, steps

BISECT_BLESSINGS = ("real", "real-retest", "real-bisect")


@dataclass(frozen=True)
class BisectionRow:
    id: int
    branch: str
    job: str
    testid: str
    basis: dict[str, str]
    latest: dict[str, str]
    basis_flight: int | None
    latest_flight: int | None
    host: str
    start_flight: int
    status: str
    culprit_tree: str | None
    culprit_commit: str | None
    confidence: float | None
    runs: int
    reason: str | None
    created: float
    finished: float | None


def _row(r: object) -> BisectionRow:
    m = r._mapping  # type: ignore[attr-defined]
    return BisectionRow(
        id=m["id"],
        branch=m["branch"],
        job=m["job"],
        testid=m["testid"],
        basis=json.loads(m["basis"]),
        latest=json.loads(m["latest"]),
        basis_flight=m["basis_flight"],
        latest_flight=m["latest_flight"],
        host=m["host"],
        start_flight=m["start_flight"],
        status=m["status"],
        culprit_tree=m["culprit_tree"],
        culprit_commit=m["culprit_commit"],
        confidence=m["confidence"],
        runs=m["runs"],
        reason=m["reason"],
        created=m["created"],
        finished=m["finished"],
    )


def active_key(branch: str, job: str, testid: str) -> str:
    return f"{branch} {job} {testid}"


def get_running(conn: Connection, branch: str, job: str, testid: str) -> BisectionRow | None:
    r = conn.execute(
        select(bisections).where(bisections.c.active == active_key(branch, job, testid))
    ).first()
    return _row(r) if r is not None else None


def get_bisection(conn: Connection, bid: int) -> BisectionRow | None:
    r = conn.execute(select(bisections).where(bisections.c.id == bid)).first()
    return _row(r) if r is not None else None


def list_bisections(conn: Connection, limit: int = 50) -> list[BisectionRow]:
    q = select(bisections).order_by(bisections.c.id.desc()).limit(limit)
    return [_row(r) for r in conn.execute(q)]


def of_flight(conn: Connection, flight: int) -> list[BisectionRow]:
    """Bisections of the failures of `flight` (their latest failure is that flight)."""
    q = select(bisections).where(bisections.c.latest_flight == flight).order_by(bisections.c.id)
    return [_row(r) for r in conn.execute(q)]


def running(conn: Connection) -> list[BisectionRow]:
    """Every running bisection, oldest first."""
    q = select(bisections).where(bisections.c.status == "running").order_by(bisections.c.id)
    return [_row(r) for r in conn.execute(q)]


def over_range(
    conn: Connection, branch: str, basis: dict[str, str], latest: dict[str, str]
) -> list[BisectionRow]:
    """Bisections of the branch (any status) over exactly this revision range, oldest first
    (the columns hold the tuples as sorted JSON, so equal tuples are equal text)."""
    q = (
        select(bisections)
        .where(
            bisections.c.branch == branch,
            bisections.c.basis == json.dumps(basis, sort_keys=True),
            bisections.c.latest == json.dumps(latest, sort_keys=True),
        )
        .order_by(bisections.c.id)
    )
    return [_row(r) for r in conn.execute(q)]


def latest_for(conn: Connection, branch: str, job: str, testid: str) -> BisectionRow | None:
    q = (
        select(bisections)
        .where(
            bisections.c.branch == branch, bisections.c.job == job, bisections.c.testid == testid
        )
        .order_by(bisections.c.id.desc())
        .limit(1)
    )
    r = conn.execute(q).first()
    return _row(r) if r is not None else None


def create_bisection(
    conn: Connection,
    *,
    branch: str,
    job: str,
    testid: str,
    basis: dict[str, str],
    latest: dict[str, str],
    basis_flight: int | None,
    latest_flight: int | None,
    host: str,
    start_flight: int,
) -> tuple[BisectionRow, bool]:
    """The running bisection of (branch, job, testid): (row, True) if this call made it.

    Dedup rests on the unique `active` column."""
    existing = get_running(conn, branch, job, testid)
    if existing is not None:
        return existing, False
    # SQLite serialises writers (BEGIN IMMEDIATE); on PostgreSQL a racing insert raises
    # IntegrityError and the caller's retry finds the other row.
    res = conn.execute(
        insert(bisections).values(
            branch=branch,
            job=job,
            testid=testid,
            active=active_key(branch, job, testid),
            basis=json.dumps(basis, sort_keys=True),
            latest=json.dumps(latest, sort_keys=True),
            basis_flight=basis_flight,
            latest_flight=latest_flight,
            host=host,
            start_flight=start_flight,
            status="running",
            runs=0,
            created=time.time(),
        )
    )
    pk = res.inserted_primary_key
    assert pk is not None
    row = get_bisection(conn, int(pk[0]))
    assert row is not None
    return row, True


def finish_bisection(
    conn: Connection,
    bid: int,
    *,
    status: str,
    culprit_tree: str | None,
    culprit_commit: str | None,
    confidence: float,
    runs: int,
    reason: str,
) -> None:
    conn.execute(
        update(bisections)
        .where(bisections.c.id == bid)
        .values(
            status=status,
            active=None,
            culprit_tree=culprit_tree,
            culprit_commit=culprit_commit,
            confidence=confidence,
            runs=runs,
            reason=reason,
            finished=time.time(),
        )
    )


def set_runs(conn: Connection, bid: int, runs: int) -> None:
    conn.execute(update(bisections).where(bisections.c.id == bid).values(runs=runs))


def max_flight_number(conn: Connection) -> int:
    r = conn.execute(select(flights.c.flight).order_by(flights.c.flight.desc()).limit(1)).first()
    return int(r[0]) if r is not None else 0


@dataclass(frozen=True)
class StepRun:
    """One finished flight's result for the bisected step."""

    flight: int
    bless_as: str
    finished: bool
    job_status: str
    step_status: str | None  # None: the job never reached the step (blocked)
    host: str | None
    revisions: dict[str, str]


def step_runs(
    conn: Connection,
    branch: str,
    job: str,
    testid: str,
    blessings: Iterable[str] = BISECT_BLESSINGS,
) -> list[StepRun]:
    """Every flight of the branch with these blessings (as blessed when finished) that has the
    job, oldest first, with the step's status, the job's host and the flight's tuple."""
    q = (
        select(flights.c.flight, flights.c.bless_as, flights.c.finished, jobs.c.status)
        .join(jobs, and_(jobs.c.flight == flights.c.flight, jobs.c.job == job))
        .where(flights.c.branch == branch, flights.c.bless_as.in_(list(blessings)))
        .order_by(flights.c.flight)
    )
    rows = list(conn.execute(q))
    if not rows:
        return []
    ids = [r.flight for r in rows]
    st: dict[int, str] = {}
    for r in conn.execute(
        select(steps.c.flight, steps.c.status)
        .where(steps.c.flight.in_(ids), steps.c.job == job, steps.c.testid == testid)
        .order_by(steps.c.stepno)
    ):
        st.setdefault(r.flight, r.status)
    hosts = {
        r.flight: r.value
        for r in conn.execute(
            select(runvars.c.flight, runvars.c.value).where(
                runvars.c.flight.in_(ids), runvars.c.job == job, runvars.c.name == "host"
            )
        )
    }
    revs: dict[int, dict[str, str]] = {}
    for fr in conn.execute(
        select(
            flight_revisions.c.flight, flight_revisions.c.tree, flight_revisions.c.revision
        ).where(flight_revisions.c.flight.in_(ids))
    ):
        revs.setdefault(fr.flight, {})[fr.tree] = fr.revision
    return [
        StepRun(
            r.flight,
            r.bless_as,
            r.finished is not None,
            r.status,
            st.get(r.flight),
            hosts.get(r.flight),
            revs.get(r.flight, {}),
        )
        for r in rows
    ]


def unfinished_probe_flights(conn: Connection, branch: str, job: str, after: int) -> list[int]:
    """real-bisect flights of the branch with the job, above `after`, not finished yet."""
    q = (
        select(flights.c.flight)
        .join(jobs, and_(jobs.c.flight == flights.c.flight, jobs.c.job == job))
        .where(
            flights.c.branch == branch,
            flights.c.bless_as == "real-bisect",
            flights.c.flight > after,
            flights.c.finished.is_(None),
        )
        .order_by(flights.c.flight)
    )
    return [int(r[0]) for r in conn.execute(q)]


def reusable_build(
    conn: Connection, job: str, wanted: dict[str, str], limit: int = 100
) -> int | None:
    """The newest flight (any branch, any blessing) where `job` passed with exactly these input
    runvars (compared both ways, osstest §7.10), or None."""
    q = (
        select(jobs.c.flight)
        .where(jobs.c.job == job, jobs.c.status == "pass")
        .order_by(jobs.c.flight.desc())
        .limit(limit)
    )
    cands = [int(r[0]) for r in conn.execute(q)]
    if not cands:
        return None
    have: dict[int, dict[str, str]] = {f: {} for f in cands}
    for r in conn.execute(
        select(runvars.c.flight, runvars.c.name, runvars.c.value).where(
            runvars.c.flight.in_(cands), runvars.c.job == job, runvars.c.synth.is_(False)
        )
    ):
        have[r.flight][r.name] = r.value
    for f in cands:
        if have[f] == wanted:
            return f
    return None
