"""The farm's view across flights: the queue, the flights workers should run, stale
jobs anywhere, and the workers themselves (one row per worker process)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from pushgate.db.schema import flights, host_slots, job_deps, jobs, runvars, workers
from pushgate.model import ACTIVE_JOB_STATUSES, Status

_ACTIVE = [s.value for s in ACTIVE_JOB_STATUSES]
_HELD = [Status.PREPARING.value, Status.RUNNING.value]

# Queue order (osstest §8.3), by the blessing a flight takes: lower first. A host's
# health check comes before the host is used again, a bisection's probes jump ahead of
# gate flights; a retest waits from its original flight's start.
PRIORITIES = {"health-check": -40, "real-bisect": -30, "real-retest": -10}
# Runvars pinning a job to one host: a bisection probe's, a health check's.
PIN_RUNVARS = ("bisect_host", "check_host")


def pinned_host(runvars: dict[str, str]) -> str | None:
    """The host a job must run on, if it is pinned to one."""
    return next((runvars[n] for n in PIN_RUNVARS if n in runvars), None)


@dataclass(frozen=True)
class QueuedFlight:
    flight: int
    branch: str
    intended: str
    priority: int
    # When it began to wait (a retest: its original flight's creation).
    since: float

    @property
    def rank(self) -> tuple[int, float, int]:
        return (self.priority, self.since, self.flight)


def runnable_flights(conn: Connection) -> list[QueuedFlight]:
    """Unfinished flights with a queued job, in queue order (priority, waiting time)."""
    parent = flights.alias("parent")
    q = (
        select(
            flights.c.flight,
            flights.c.branch,
            flights.c.bless_as,
            flights.c.created,
            parent.c.created.label("parent_created"),
        )
        .outerjoin(parent, parent.c.flight == flights.c.parent_flight)
        .where(
            flights.c.finished.is_(None),
            select(jobs.c.job)
            .where(jobs.c.flight == flights.c.flight, jobs.c.status == Status.QUEUED)
            .exists(),
        )
    )
    out = []
    for r in conn.execute(q):
        since = r.created
        if r.bless_as == "real-retest" and r.parent_created is not None:
            since = r.parent_created
        out.append(
            QueuedFlight(r.flight, r.branch, r.bless_as, PRIORITIES.get(r.bless_as, 0), since)
        )
    return sorted(out, key=lambda f: f.rank)


def stale_flights(conn: Connection, now: float) -> dict[int, set[str | None]]:
    """flight -> runners of its held jobs, for flights with a held job whose lease ran out
    (the reaper's look at the whole farm; a dead runner on this machine is told apart by
    the scheduler's recover)."""
    q = select(jobs.c.flight, jobs.c.runner, jobs.c.lease_until).where(jobs.c.status.in_(_HELD))
    out: dict[int, set[str | None]] = {}
    held: dict[int, set[str | None]] = {}
    for r in conn.execute(q):
        held.setdefault(r.flight, set()).add(r.runner)
        if r.lease_until is None or r.lease_until < now:
            out[r.flight] = held[r.flight]
    return {f: held[f] for f in out}


def held_runners(conn: Connection) -> dict[str | None, int]:
    """runner -> a flight it holds a job of (to find jobs of dead runners on this machine)."""
    q = select(jobs.c.runner, func.min(jobs.c.flight)).where(jobs.c.status.in_(_HELD))
    return {r: int(f) for r, f in conn.execute(q.group_by(jobs.c.runner))}


@dataclass(frozen=True)
class QueuedJob:
    flight: int
    branch: str
    job: str
    flags: tuple[str, ...]
    # A host the job must run on (a bisection probe), or prefers (a retest).
    pinned: str | None
    priority: int
    # Since when it waits: its flight's start (or creation), or its last build's end.
    since: float
    # Builds not finished yet: it waits for them, not for a host.
    waiting_for_builds: int
    # Mean duration of its last finished runs (same job name), if any.
    typical_s: float | None


def queued_jobs(conn: Connection) -> list[QueuedJob]:
    """What waits: every queued job of an unfinished flight, in queue order."""
    fl = {f.flight: f for f in runnable_flights(conn)}
    if not fl:
        return []
    starts = {
        r.flight: r.started or r.created
        for r in conn.execute(
            select(flights.c.flight, flights.c.started, flights.c.created).where(
                flights.c.flight.in_(fl)
            )
        )
    }
    q = select(jobs.c.flight, jobs.c.job).where(
        jobs.c.flight.in_(fl), jobs.c.status == Status.QUEUED
    )
    rows = [(r.flight, r.job) for r in conn.execute(q.order_by(jobs.c.flight, jobs.c.ordinal))]
    names = {j for _, j in rows}
    rv: dict[tuple[int, str], dict[str, str]] = {}
    for r in conn.execute(
        select(runvars.c.flight, runvars.c.job, runvars.c.name, runvars.c.value).where(
            runvars.c.flight.in_(fl),
            runvars.c.name.in_(["all_hostflags", *PIN_RUNVARS]),
        )
    ):
        rv.setdefault((r.flight, r.job), {})[r.name] = r.value
    dep = jobs.alias("dep")
    # Builds not finished, by job.
    deps: dict[tuple[int, str], int] = {}
    for d in conn.execute(
        select(job_deps.c.flight, job_deps.c.job, func.count())
        .join(dep, and_(dep.c.flight == job_deps.c.dep_flight, dep.c.job == job_deps.c.dep_job))
        .where(job_deps.c.flight.in_(fl), dep.c.status.in_(_ACTIVE))
        .group_by(job_deps.c.flight, job_deps.c.job)
    ):
        deps[(d[0], d[1])] = int(d[2])
    ended: dict[tuple[int, str], float] = {}
    for e in conn.execute(
        select(job_deps.c.flight, job_deps.c.job, func.max(dep.c.finished))
        .join(dep, and_(dep.c.flight == job_deps.c.dep_flight, dep.c.job == job_deps.c.dep_job))
        .where(job_deps.c.flight.in_(fl))
        .group_by(job_deps.c.flight, job_deps.c.job)
    ):
        if e[2] is not None:
            ended[(e[0], e[1])] = float(e[2])
    typical = typical_durations(conn, names)
    out = []
    for f, j in rows:
        qf = fl[f]
        v = rv.get((f, j), {})
        out.append(
            QueuedJob(
                flight=f,
                branch=qf.branch,
                job=j,
                flags=tuple(x for x in v.get("all_hostflags", "").split(",") if x),
                pinned=pinned_host(v),
                priority=qf.priority,
                since=max(starts.get(f) or qf.since, ended.get((f, j), 0.0)),
                waiting_for_builds=deps.get((f, j), 0),
                typical_s=typical.get(j),
            )
        )
    return sorted(out, key=lambda q: (q.priority, fl[q.flight].since, q.flight))


def typical_durations(conn: Connection, names: set[str], last: int = 10) -> dict[str, float]:
    """job name -> mean duration of its last `last` runs that passed or failed."""
    if not names:
        return {}
    q = (
        select(jobs.c.job, jobs.c.started, jobs.c.finished)
        .where(
            jobs.c.job.in_(names),
            jobs.c.status.in_([Status.PASS.value, Status.FAIL.value]),
            jobs.c.started.is_not(None),
            jobs.c.finished.is_not(None),
        )
        .order_by(jobs.c.job, jobs.c.finished.desc())
    )
    got: dict[str, list[float]] = {}
    for r in conn.execute(q):
        d = got.setdefault(r.job, [])
        if len(d) < last:
            d.append(max(0.0, r.finished - r.started))
    return {j: sum(d) / len(d) for j, d in got.items() if d}


def running_ends(conn: Connection) -> dict[str, list[float]]:
    """host -> expected end times of the jobs now on it (start + typical duration)."""
    rows = [
        (r.host, r.job, r.started)
        for r in conn.execute(
            select(host_slots.c.host, jobs.c.job, jobs.c.started)
            .join(jobs, and_(jobs.c.flight == host_slots.c.flight, jobs.c.job == host_slots.c.job))
            .where(host_slots.c.flight.is_not(None))
        )
    ]
    typical = typical_durations(conn, {j for _, j, _ in rows})
    out: dict[str, list[float]] = {}
    now = time.time()
    for host, job, started in rows:
        out.setdefault(host, []).append((started or now) + typical.get(job, 0.0))
    return out


# --- workers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRow:
    worker: str
    machine: str
    pid: int
    started: float
    heartbeat: float
    lease_until: float
    stopped: float | None
    why: str | None
    # (flight, job, status) of the jobs it holds now.
    jobs: tuple[tuple[int, str, str], ...]


def register_worker(conn: Connection, worker: str, machine: str, pid: int, lease_s: float) -> None:
    now = time.time()
    values = {"machine": machine, "pid": pid, "started": now, "heartbeat": now}
    values.update(lease_until=now + lease_s, stopped=None, why=None)
    # One process runs several flights one after another (the demo, a daemon's cycle):
    # it registers again under its one name, which starts its record anew.
    done = conn.execute(update(workers).where(workers.c.worker == worker).values(**values))
    if done.rowcount == 0:
        conn.execute(insert(workers).values(worker=worker, **values))


def worker_beat(conn: Connection, worker: str, lease_s: float) -> None:
    now = time.time()
    conn.execute(
        update(workers)
        .where(workers.c.worker == worker)
        .values(heartbeat=now, lease_until=now + lease_s)
    )


def worker_stopped(conn: Connection, worker: str, why: str) -> None:
    conn.execute(
        update(workers)
        .where(workers.c.worker == worker, workers.c.stopped.is_(None))
        .values(stopped=time.time(), why=why)
    )


def mark_lost_workers(conn: Connection, now: float) -> list[str]:
    """Workers whose lease ran out without a stop: recorded as lost (their jobs are
    reclaimed by the reaper, flight by flight)."""
    lost = [
        r.worker
        for r in conn.execute(
            select(workers.c.worker).where(workers.c.stopped.is_(None), workers.c.lease_until < now)
        )
    ]
    if lost:
        conn.execute(
            update(workers)
            .where(workers.c.worker.in_(lost), workers.c.stopped.is_(None))
            .values(stopped=now, why="lease ran out (presumed dead)")
        )
    return lost


def list_workers(conn: Connection, *, all_: bool = False, limit: int = 100) -> list[WorkerRow]:
    """Workers, live ones first then the most recently stopped."""
    q = select(workers)
    if not all_:
        q = q.where(or_(workers.c.stopped.is_(None), workers.c.stopped > time.time() - 86400))
    rows = list(conn.execute(q.order_by(workers.c.heartbeat.desc()).limit(limit)))
    held: dict[str, list[tuple[int, str, str]]] = {}
    if rows:
        for r in conn.execute(
            select(jobs.c.runner, jobs.c.flight, jobs.c.job, jobs.c.status).where(
                jobs.c.status.in_(_HELD), jobs.c.runner.in_([w.worker for w in rows])
            )
        ):
            held.setdefault(r.runner, []).append((r.flight, r.job, r.status))
    out = [
        WorkerRow(
            r.worker,
            r.machine,
            r.pid,
            r.started,
            r.heartbeat,
            r.lease_until,
            r.stopped,
            r.why,
            tuple(sorted(held.get(r.worker, []))),
        )
        for r in rows
    ]
    return sorted(out, key=lambda w: (w.stopped is not None, -w.heartbeat))


def failure_hosts(conn: Connection, flight: int) -> dict[str, str]:
    """job -> the host it ran on in the flight a retest flight retests (empty otherwise):
    a retest prefers the host the failure happened on."""
    row = conn.execute(
        select(flights.c.bless_as, flights.c.parent_flight).where(flights.c.flight == flight)
    ).first()
    if row is None or row.bless_as != "real-retest" or row.parent_flight is None:
        return {}
    q = select(runvars.c.job, runvars.c.value).where(
        runvars.c.flight == row.parent_flight, runvars.c.name == "host"
    )
    return {r.job: r.value for r in conn.execute(q)}
