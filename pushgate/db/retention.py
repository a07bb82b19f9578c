"""Queries of retention (`pushgate gc`): how far flights and jobs got, and what must stay."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, select

from pushgate.db.schema import bisections, flights, gate_cycles, job_deps, jobs, pushes
from pushgate.model import FINAL_JOB_STATUSES

# IN lists are sent in chunks: PostgreSQL and SQLite both cap bound parameters.
_CHUNK = 500


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    ids = sorted(set(ids))
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


@dataclass(frozen=True)
class FlightEnd:
    flight: int
    branch: str
    # None while the flight runs (or was never run).
    finished: float | None


@dataclass(frozen=True)
class JobEnd:
    status: str
    finished: float | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_JOB_STATUSES


def flight_ends(conn: Connection, ids: Iterable[int]) -> dict[int, FlightEnd]:
    """Branch and end of these flights (those that exist)."""
    out = {}
    for chunk in _chunks(ids):
        q = select(flights.c.flight, flights.c.branch, flights.c.finished).where(
            flights.c.flight.in_(chunk)
        )
        for r in conn.execute(q):
            out[int(r.flight)] = FlightEnd(int(r.flight), r.branch, r.finished)
    return out


def job_ends(conn: Connection, ids: Iterable[int]) -> dict[tuple[int, str], JobEnd]:
    """Status and end of every job of these flights."""
    out = {}
    for chunk in _chunks(ids):
        q = select(jobs.c.flight, jobs.c.job, jobs.c.status, jobs.c.finished).where(
            jobs.c.flight.in_(chunk)
        )
        for r in conn.execute(q):
            out[(int(r.flight), r.job)] = JobEnd(r.status, r.finished)
    return out


def last_flights(conn: Connection, k: int) -> set[int]:
    """The newest k flights of each branch."""
    if k <= 0:
        return set()
    rank = (
        func.row_number()
        .over(partition_by=flights.c.branch, order_by=flights.c.flight.desc())
        .label("rank")
    )
    sub = select(flights.c.flight, rank).subquery()
    return {int(r[0]) for r in conn.execute(select(sub.c.flight).where(sub.c.rank <= k))}


def held_flights(conn: Connection) -> dict[int, str]:
    """Flights whose logs and artifacts stay whatever their age, with why: each branch's
    last pushed flight, the flights of a gate cycle not done, and a running bisection's
    basis, latest and probe flights."""
    held: dict[int, str] = {}
    last_push = (
        select(pushes.c.branch, func.max(pushes.c.flight))
        .where(pushes.c.status == "pushed")
        .group_by(pushes.c.branch)
    )
    for branch, f in conn.execute(last_push):
        held.setdefault(int(f), f"last pushed flight of {branch}")
    for r in conn.execute(
        select(gate_cycles.c.flight, gate_cycles.c.retest_flight, gate_cycles.c.branch).where(
            gate_cycles.c.stage != "done"
        )
    ):
        for f in (r.flight, r.retest_flight):
            if f is not None:
                held.setdefault(int(f), f"cycle of {r.branch} in progress")
    for b in conn.execute(select(bisections).where(bisections.c.status == "running")):
        why = f"bisection {b.id} running"
        for f in (b.basis_flight, b.latest_flight):
            if f is not None:
                held.setdefault(int(f), why)
        probes = select(flights.c.flight).where(
            flights.c.branch == b.branch,
            flights.c.bless_as == "real-bisect",
            flights.c.flight > b.start_flight,
        )
        for (f,) in conn.execute(probes):
            held.setdefault(int(f), why)
    return held


def held_builds(conn: Connection, held: Iterable[int]) -> dict[tuple[int, str], str]:
    """Jobs whose artifacts stay although their flight's may go, with why: the builds
    the jobs of held flights use (a retest or a probe uses an older flight's build), and
    every passed build a running bisection may still reuse (a build its job needs, from
    its basis flight on, in any branch: the bisector reuses any flight's)."""
    out: dict[tuple[int, str], str] = {}
    for chunk in _chunks(held):
        q = select(job_deps.c.dep_flight, job_deps.c.dep_job, job_deps.c.flight).where(
            job_deps.c.flight.in_(chunk)
        )
        for r in conn.execute(q):
            out.setdefault((int(r.dep_flight), r.dep_job), f"used by flight {r.flight}")
    for b in conn.execute(select(bisections).where(bisections.c.status == "running")):
        ends = [f for f in (b.basis_flight, b.latest_flight) if f is not None]
        if not ends:
            continue
        names = _build_names(conn, ends, b.job)
        if not names:
            continue
        q = select(jobs.c.flight, jobs.c.job).where(
            jobs.c.job.in_(sorted(names)), jobs.c.status == "pass", jobs.c.flight >= min(ends)
        )
        for row in conn.execute(q):
            out.setdefault((int(row.flight), row.job), f"bisection {b.id} may reuse it")
    return out


def _build_names(conn: Connection, ends: list[int], job: str) -> set[str]:
    """The names of the builds `job` needed (transitively) in these flights."""
    names: set[str] = set()
    todo = [(f, job) for f in ends]
    seen: set[tuple[int, str]] = set()
    while todo:
        f, j = todo.pop()
        if (f, j) in seen:
            continue
        seen.add((f, j))
        q = select(job_deps.c.dep_flight, job_deps.c.dep_job).where(
            and_(job_deps.c.flight == f, job_deps.c.job == j)
        )
        for r in conn.execute(q):
            names.add(r.dep_job)
            todo.append((int(r.dep_flight), r.dep_job))
    return names
