"""Queries for flights, jobs, runvars, job dependencies and steps."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from pushgate.db.engine import DriverStatement
from pushgate.db.schema import flight_revisions, flights, job_deps, jobs, runvars, steps
from pushgate.model import (
    ACTIVE_JOB_STATUSES,
    STICKY_JOB_STATUSES,
    FlightInfo,
    JobInfo,
    Status,
    StepInfo,
)


@dataclass(frozen=True)
class NewJob:
    job: str
    runvars: dict[str, str]
    # runvar name -> (flight, job) of a prerequisite build.
    deps: dict[str, tuple[int | None, str]]


def create_flight(
    conn: Connection,
    *,
    branch: str,
    intended: str,
    bless_as: str,
    revisions: dict[str, tuple[str, str, str | None]],
    new_jobs: Iterable[NewJob],
    parent_flight: int | None = None,
) -> int:
    """Insert a flight with its tuple and jobs; returns the new flight number.

    A dependency whose flight is None names a job of the new flight itself.
    """
    res = conn.execute(
        insert(flights).values(
            branch=branch,
            blessing="constructing",
            intended=intended,
            bless_as=bless_as,
            created=time.time(),
            parent_flight=parent_flight,
        )
    )
    pk = res.inserted_primary_key
    assert pk is not None
    flight = int(pk[0])
    if revisions:
        conn.execute(
            insert(flight_revisions),
            [
                {"flight": flight, "tree": t, "revision": r, "url": u, "baseline": b}
                for t, (r, u, b) in revisions.items()
            ],
        )
    job_rows, var_rows, dep_rows = [], [], []
    for ordinal, nj in enumerate(new_jobs):
        job_rows.append(
            {
                "flight": flight,
                "job": nj.job,
                "status": Status.QUEUED,
                "ordinal": ordinal,
                "attempts": 0,
            }
        )
        for name, value in nj.runvars.items():
            var_rows.append(
                {"flight": flight, "job": nj.job, "name": name, "value": value, "synth": False}
            )
        for name, (dflight, djob) in nj.deps.items():
            df = flight if dflight is None else dflight
            dep_rows.append(
                {"flight": flight, "job": nj.job, "name": name, "dep_flight": df, "dep_job": djob}
            )
            var_rows.append(
                {
                    "flight": flight,
                    "job": nj.job,
                    "name": name,
                    "value": djob if dflight is None else f"{df}.{djob}",
                    "synth": False,
                }
            )
    if job_rows:
        conn.execute(insert(jobs), job_rows)
    if var_rows:
        conn.execute(insert(runvars), var_rows)
    if dep_rows:
        conn.execute(insert(job_deps), dep_rows)
    return flight


def get_flight(conn: Connection, flight: int) -> FlightInfo | None:
    row = conn.execute(select(flights).where(flights.c.flight == flight)).mappings().first()
    if row is None:
        return None
    revs = {
        r.tree: r.revision
        for r in conn.execute(
            select(flight_revisions.c.tree, flight_revisions.c.revision).where(
                flight_revisions.c.flight == flight
            )
        )
    }
    return FlightInfo(
        flight=row["flight"],
        branch=row["branch"],
        blessing=row["blessing"],
        intended=row["intended"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        revisions=revs,
    )


def flight_urls(conn: Connection, flight: int) -> dict[str, str]:
    q = select(flight_revisions.c.tree, flight_revisions.c.url).where(
        flight_revisions.c.flight == flight
    )
    return {r.tree: r.url for r in conn.execute(q)}


def flight_baselines(conn: Connection, flight: int) -> dict[str, str | None]:
    q = select(flight_revisions.c.tree, flight_revisions.c.baseline).where(
        flight_revisions.c.flight == flight
    )
    return {r.tree: r.baseline for r in conn.execute(q)}


def reported_in(conn: Connection, flight: int) -> int:
    """The flight whose report covers `flight`: a retest is reported with its parent."""
    row = conn.execute(
        select(flights.c.bless_as, flights.c.parent_flight).where(flights.c.flight == flight)
    ).first()
    if row is not None and row.bless_as == "real-retest" and row.parent_flight is not None:
        return int(row.parent_flight)
    return flight


def bless_as(conn: Connection, flight: int) -> str:
    return str(
        conn.execute(select(flights.c.bless_as).where(flights.c.flight == flight)).scalar_one()
    )


def list_flights(conn: Connection, branch: str | None = None, limit: int = 50) -> list[FlightInfo]:
    q = select(flights.c.flight).order_by(flights.c.flight.desc()).limit(limit)
    if branch:
        q = q.where(flights.c.branch == branch)
    out = []
    for (f,) in conn.execute(q):
        info = get_flight(conn, f)
        if info:
            out.append(info)
    return out


def get_jobs(conn: Connection, flight: int) -> list[JobInfo]:
    vars_by_job: dict[str, dict[str, str]] = {}
    for r in conn.execute(
        select(runvars.c.job, runvars.c.name, runvars.c.value).where(runvars.c.flight == flight)
    ):
        vars_by_job.setdefault(r.job, {})[r.name] = r.value
    out = []
    for r in conn.execute(select(jobs).where(jobs.c.flight == flight).order_by(jobs.c.ordinal)):
        rv = vars_by_job.get(r.job, {})
        out.append(
            JobInfo(
                flight=flight,
                job=r.job,
                status=r.status,
                started=r.started,
                finished=r.finished,
                host=rv.get("host"),
                runvars=rv,
            )
        )
    return out


def get_steps(conn: Connection, flight: int, job: str | None = None) -> list[StepInfo]:
    q = select(steps).where(steps.c.flight == flight).order_by(steps.c.job, steps.c.stepno)
    if job is not None:
        q = q.where(steps.c.job == job)
    return [
        StepInfo(
            flight=r.flight,
            job=r.job,
            stepno=r.stepno,
            testid=r.testid,
            status=r.status,
            started=r.started,
            finished=r.finished,
            log=r.log,
            fatal=r.fatal,
        )
        for r in conn.execute(q)
    ]


def job_deps_of(conn: Connection, flight: int) -> dict[str, list[tuple[str, int, str]]]:
    """job -> [(runvar name, dep flight, dep job)] for a flight."""
    out: dict[str, list[tuple[str, int, str]]] = {}
    for r in conn.execute(select(job_deps).where(job_deps.c.flight == flight)):
        out.setdefault(r.job, []).append((r.name, r.dep_flight, r.dep_job))
    return out


def job_statuses(conn: Connection, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], str]:
    keys = list(keys)
    if not keys:
        return {}
    out = {}
    by_flight: dict[int, list[str]] = {}
    for f, j in keys:
        by_flight.setdefault(f, []).append(j)
    for f, js in by_flight.items():
        q = select(jobs.c.job, jobs.c.status).where(jobs.c.flight == f, jobs.c.job.in_(js))
        for r in conn.execute(q):
            out[(f, r.job)] = r.status
    return out


def set_flight_running(conn: Connection, flight: int) -> None:
    conn.execute(
        update(flights)
        .where(flights.c.flight == flight, flights.c.blessing == "constructing")
        .values(blessing="running", started=time.time())
    )


def finish_flight_if_done(conn: Connection, flight: int) -> bool:
    """Bless the flight when no job is left active.

    Returns True only for the one caller whose transaction blessed it: the
    conditional UPDATE makes concurrent runners of one flight agree on that
    (on PostgreSQL the second waits for the first's row lock, then matches
    nothing), so per-flight finishing work runs once.
    """
    active = conn.execute(
        select(func.count())
        .select_from(jobs)
        .where(jobs.c.flight == flight, jobs.c.status.in_([s.value for s in ACTIVE_JOB_STATUSES]))
    ).scalar_one()
    if active:
        return False
    res = conn.execute(
        update(flights)
        .where(flights.c.flight == flight, flights.c.blessing.in_(["constructing", "running"]))
        .values(blessing=flights.c.bless_as, finished=time.time())
    )
    return res.rowcount == 1


_CLAIM_JOB = DriverStatement(
    update(jobs)
    .where(
        jobs.c.flight == bindparam("f"),
        jobs.c.job == bindparam("j"),
        jobs.c.status == Status.QUEUED.value,
    )
    .values(
        status=Status.PREPARING.value,
        runner=bindparam("b_runner"),
        lease_until=bindparam("until"),
        started=bindparam("now"),
    )
)


def claim_job(conn: Connection, flight: int, job: str, runner: str, lease_until: float) -> bool:
    """Move a queued job to preparing for this runner; False if someone else has it."""
    changed = _CLAIM_JOB(
        conn, {"f": flight, "j": job, "b_runner": runner, "until": lease_until, "now": time.time()}
    )
    return changed == 1


def unclaim_job(conn: Connection, flight: int, job: str, runner: str) -> None:
    """Give a just-claimed job back to the queue (no slot could be had after all)."""
    conn.execute(
        update(jobs)
        .where(
            jobs.c.flight == flight,
            jobs.c.job == job,
            jobs.c.runner == runner,
            jobs.c.status == Status.PREPARING,
        )
        .values(status=Status.QUEUED, runner=None, lease_until=None, started=None)
    )


_SET_JOB_STATUS_CORE = (
    update(jobs)
    .where(
        jobs.c.flight == bindparam("f"),
        jobs.c.job == bindparam("j"),
        # broken and aborted stick (osstest §1.3); one != each, as a driver
        # statement cannot expand an IN list.
        *(jobs.c.status != s.value for s in STICKY_JOB_STATUSES),
    )
    .values(status=bindparam("st"))
)
_SET_JOB_STATUS = DriverStatement(_SET_JOB_STATUS_CORE)
_FINISH_JOB = DriverStatement(
    _SET_JOB_STATUS_CORE.values(finished=bindparam("now"), runner=None, lease_until=None)
)


def set_job_status(
    conn: Connection, flight: int, job: str, status: str, *, final: bool = False
) -> None:
    params = {"f": flight, "j": job, "st": str(status)}
    if final:
        _FINISH_JOB(conn, {**params, "now": time.time()})
    else:
        _SET_JOB_STATUS(conn, params)


def heartbeat(conn: Connection, runner: str, lease_until: float) -> None:
    conn.execute(
        update(jobs)
        .where(jobs.c.runner == runner, jobs.c.status.in_([Status.PREPARING, Status.RUNNING]))
        .values(lease_until=lease_until)
    )


@dataclass(frozen=True)
class StaleJob:
    flight: int
    job: str
    runner: str | None
    attempts: int


def stale_jobs(conn: Connection, flight: int, now: float, dead_runners: set[str]) -> list[StaleJob]:
    """Jobs left preparing/running by a runner that is gone (lease expired or known dead)."""
    q = select(jobs.c.job, jobs.c.runner, jobs.c.attempts, jobs.c.lease_until).where(
        jobs.c.flight == flight, jobs.c.status.in_([Status.PREPARING, Status.RUNNING])
    )
    out = []
    for r in conn.execute(q):
        if r.runner in dead_runners or r.lease_until is None or r.lease_until < now:
            out.append(StaleJob(flight, r.job, r.runner, r.attempts))
    return out


def active_runners(conn: Connection, flight: int) -> set[str]:
    q = (
        select(jobs.c.runner)
        .where(
            jobs.c.flight == flight,
            jobs.c.status.in_([Status.PREPARING, Status.RUNNING]),
            jobs.c.runner.is_not(None),
        )
        .distinct()
    )
    return {r.runner for r in conn.execute(q)}


def requeue_job(conn: Connection, flight: int, job: str, expected_runner: str | None) -> bool:
    """Reset an interrupted job to queued, dropping its partial steps and outputs."""
    res = conn.execute(
        update(jobs)
        .where(
            jobs.c.flight == flight,
            jobs.c.job == job,
            jobs.c.status.in_([Status.PREPARING, Status.RUNNING]),
            jobs.c.runner == expected_runner if expected_runner else jobs.c.runner.is_(None),
        )
        .values(
            status=Status.QUEUED,
            runner=None,
            lease_until=None,
            attempts=jobs.c.attempts + 1,
            started=None,
        )
    )
    if res.rowcount != 1:
        return False
    conn.execute(delete(steps).where(steps.c.flight == flight, steps.c.job == job))
    conn.execute(
        delete(runvars).where(
            runvars.c.flight == flight, runvars.c.job == job, runvars.c.synth.is_(True)
        )
    )
    return True


def break_job(conn: Connection, flight: int, job: str, reason: str) -> None:
    """Give up on an interrupted job: its running step and the job become broken."""
    now = time.time()
    conn.execute(
        update(steps)
        .where(steps.c.flight == flight, steps.c.job == job, steps.c.status == Status.RUNNING)
        .values(status=Status.BROKEN, finished=now, reason=reason)
    )
    conn.execute(
        update(jobs)
        .where(jobs.c.flight == flight, jobs.c.job == job)
        .values(status=Status.BROKEN, finished=now, runner=None, lease_until=None)
    )


# The per-step statements are built once and run on the driver's cursor: building
# a Core construct per call cost more than executing it (0.33 vs 0.12 ms a step),
# and executing a step's two statements through SQLAlchemy twice what the driver
# takes (0.31 vs 0.15 ms).
_STEP_COLUMNS = (
    "flight",
    "job",
    "stepno",
    "testid",
    "status",
    "fatal",
    "started",
    "finished",
    "log",
    "reason",
)
_INSERT_STEP = DriverStatement(insert(steps).values({c: bindparam(c) for c in _STEP_COLUMNS}))
_FINISH_STEP = DriverStatement(
    update(steps)
    .where(
        steps.c.flight == bindparam("f"),
        steps.c.job == bindparam("j"),
        steps.c.stepno == bindparam("n"),
    )
    .values(status=bindparam("st"), finished=bindparam("fin"), reason=bindparam("why"))
)


def start_step(
    conn: Connection,
    flight: int,
    job: str,
    stepno: int,
    testid: str,
    fatal: bool,
    log: str | None,
    status: str = Status.RUNNING,
    finish: float | None = None,
    reason: str | None = None,
) -> None:
    _INSERT_STEP(
        conn,
        {
            "flight": flight,
            "job": job,
            "stepno": stepno,
            "testid": testid,
            "status": str(status),
            "fatal": bool(fatal),
            "started": time.time(),
            "finished": finish,
            "log": log,
            "reason": reason,
        },
    )


def finish_step(
    conn: Connection, flight: int, job: str, stepno: int, status: str, reason: str | None = None
) -> None:
    _FINISH_STEP(
        conn,
        {"f": flight, "j": job, "n": stepno, "st": str(status), "fin": time.time(), "why": reason},
    )


_DELETE_RUNVAR = DriverStatement(
    delete(runvars).where(
        runvars.c.flight == bindparam("f"),
        runvars.c.job == bindparam("j"),
        runvars.c.name == bindparam("b_name"),
    )
)
_INSERT_RUNVAR = DriverStatement(
    insert(runvars).values({c: bindparam(c) for c in ("flight", "job", "name", "value", "synth")})
)


def set_runvars(conn: Connection, flight: int, job: str, values: dict[str, str]) -> None:
    """Write synthetic (output) runvars; a newer value replaces an older one."""
    if not values:
        return
    _DELETE_RUNVAR.many(conn, [{"f": flight, "j": job, "b_name": k} for k in values])
    _INSERT_RUNVAR.many(
        conn,
        [
            {"flight": flight, "job": job, "name": k, "value": v, "synth": True}
            for k, v in values.items()
        ],
    )


def max_flight(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(flights.c.flight), 0))).scalar_one())
