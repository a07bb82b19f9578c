"""Queries for flights, jobs, runvars, job dependencies and steps."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

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


class LeaseLost(Exception):
    """A runner's write for a job was refused: another runner has taken the job over
    (its attempt token moved on). The runner must stop the job and write nothing more."""


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


_QUEUED_JOB = (
    jobs.c.flight == bindparam("f"),
    jobs.c.job == bindparam("j"),
    jobs.c.status == Status.QUEUED.value,
)
_CLAIM_JOB_CORE = (
    update(jobs)
    .values(
        status=Status.PREPARING.value,
        runner=bindparam("b_runner"),
        lease_until=bindparam("until"),
        started=bindparam("now"),
        attempt=jobs.c.attempt + 1,
    )
    .returning(jobs.c.attempt)
)
_CLAIM_JOB = DriverStatement(_CLAIM_JOB_CORE.where(*_QUEUED_JOB))
# PostgreSQL: a job row another worker's claim has locked is skipped, not waited for
# (its claim commits or rolls back; this worker goes on to other jobs).
_LOCKABLE = select(jobs.c.job).where(*_QUEUED_JOB).with_for_update(skip_locked=True)
_CLAIM_JOB_PG = DriverStatement(
    _CLAIM_JOB_CORE.where(*_QUEUED_JOB, jobs.c.job.in_(_LOCKABLE.scalar_subquery()))
)


def claim_job(
    conn: Connection, flight: int, job: str, runner: str, lease_until: float
) -> int | None:
    """Move a queued job to preparing for this runner: its new attempt (the fencing token
    every later write for the job names), or None if someone else has it."""
    stmt = _CLAIM_JOB_PG if conn.dialect.name == "postgresql" else _CLAIM_JOB
    got = stmt.rows(
        conn, {"f": flight, "j": job, "b_runner": runner, "until": lease_until, "now": time.time()}
    )
    return int(got[0][0]) if got else None


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
# The same, fenced: only the attempt holding the job may write (invariant 8).
_FENCED = jobs.c.attempt == bindparam("a")
_SET_JOB_STATUS_FENCED = DriverStatement(_SET_JOB_STATUS_CORE.where(_FENCED))
_FINISH_JOB_FENCED = DriverStatement(
    _SET_JOB_STATUS_CORE.where(_FENCED).values(
        finished=bindparam("now"), runner=None, lease_until=None
    )
)


def set_job_status(
    conn: Connection,
    flight: int,
    job: str,
    status: str,
    *,
    final: bool = False,
    attempt: int | None = None,
) -> None:
    """Set a job's status. With `attempt` (a runner's write), fenced: raises LeaseLost
    when the job has changed hands since that attempt claimed it."""
    params: dict[str, object] = {"f": flight, "j": job, "st": str(status)}
    if final:
        params["now"] = time.time()
    if attempt is None:
        (_FINISH_JOB if final else _SET_JOB_STATUS)(conn, params)
        return
    params["a"] = attempt
    if (_FINISH_JOB_FENCED if final else _SET_JOB_STATUS_FENCED)(conn, params) != 1:
        raise LeaseLost(f"{flight}.{job}: attempt {attempt} was taken over")


def settle_queued_job(conn: Connection, flight: int, job: str, status: str) -> bool:
    """Give a queued job its final status without running it (blocked, starved): False
    if it is no longer queued (another runner claimed or settled it first)."""
    res = conn.execute(
        update(jobs)
        .where(jobs.c.flight == flight, jobs.c.job == job, jobs.c.status == Status.QUEUED)
        .values(
            status=str(status),
            finished=time.time(),
            runner=None,
            lease_until=None,
            attempt=jobs.c.attempt + 1,
        )
    )
    return res.rowcount == 1


_RENEW = DriverStatement(
    update(jobs)
    .where(jobs.c.flight == bindparam("f"), jobs.c.job == bindparam("j"), _FENCED)
    .values(lease_until=bindparam("until"))
)


def renew_lease(conn: Connection, flight: int, job: str, attempt: int, lease_until: float) -> bool:
    """Extend the lease of a job's attempt; False if the job has changed hands."""
    return _RENEW(conn, {"f": flight, "j": job, "a": attempt, "until": lease_until}) == 1


@dataclass(frozen=True)
class StaleJob:
    flight: int
    job: str
    runner: str | None
    attempts: int
    # The attempt that holds the job (its fencing token).
    attempt: int
    # Its runner is known dead (else only its lease has run out).
    dead: bool


def stale_jobs(conn: Connection, flight: int, now: float, dead_runners: set[str]) -> list[StaleJob]:
    """Jobs left preparing/running by a runner that is gone (lease expired or known dead)."""
    q = select(
        jobs.c.job, jobs.c.runner, jobs.c.attempts, jobs.c.attempt, jobs.c.lease_until
    ).where(jobs.c.flight == flight, jobs.c.status.in_([Status.PREPARING, Status.RUNNING]))
    out = []
    for r in conn.execute(q):
        dead = r.runner in dead_runners
        if dead or r.lease_until is None or r.lease_until < now:
            out.append(StaleJob(flight, r.job, r.runner, r.attempts, r.attempt, dead))
    return out


def take_over(
    conn: Connection, stale: StaleJob, runner: str, lease_until: float, now: float
) -> int | None:
    """Take a stale job from the attempt that holds it: the job's new attempt, or None if
    that attempt renewed its lease meanwhile or another runner took the job first.

    From here on the old attempt's writes are refused (invariant 8); the caller kills
    its processes, then requeues or breaks the job under the new attempt.
    """
    cond = [
        jobs.c.flight == stale.flight,
        jobs.c.job == stale.job,
        jobs.c.attempt == stale.attempt,
        jobs.c.status.in_([Status.PREPARING, Status.RUNNING]),
    ]
    if not stale.dead:
        cond.append(or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now))
    got = conn.execute(
        update(jobs)
        .where(*cond)
        .values(attempt=jobs.c.attempt + 1, runner=runner, lease_until=lease_until)
        .returning(jobs.c.attempt)
    ).first()
    return None if got is None else int(got[0])


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


def requeue_job(conn: Connection, flight: int, job: str, attempt: int) -> bool:
    """Reset an interrupted job to queued, dropping its partial steps and outputs.

    Fenced: only the attempt holding the job does it (False otherwise), and the
    attempt moves on, so nothing written under the old one is accepted after.
    """
    res = conn.execute(
        update(jobs)
        .where(
            jobs.c.flight == flight,
            jobs.c.job == job,
            jobs.c.status.in_([Status.PREPARING, Status.RUNNING]),
            jobs.c.attempt == attempt,
        )
        .values(
            status=Status.QUEUED,
            runner=None,
            lease_until=None,
            attempts=jobs.c.attempts + 1,
            attempt=jobs.c.attempt + 1,
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


def break_job(conn: Connection, flight: int, job: str, reason: str, attempt: int) -> bool:
    """Give up on an interrupted job: its running step and the job become broken.

    Fenced like requeue_job: False (and nothing written) if `attempt` no longer holds it.
    """
    now = time.time()
    res = conn.execute(
        update(jobs)
        .where(jobs.c.flight == flight, jobs.c.job == job, jobs.c.attempt == attempt)
        .values(
            status=Status.BROKEN,
            finished=now,
            runner=None,
            lease_until=None,
            attempt=jobs.c.attempt + 1,
        )
    )
    if res.rowcount != 1:
        return False
    conn.execute(
        update(steps)
        .where(steps.c.flight == flight, steps.c.job == job, steps.c.status == Status.RUNNING)
        .values(status=Status.BROKEN, finished=now, reason=reason)
    )
    return True


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
# Fenced forms, for a runner: the step is written only while the job's row says the
# runner's attempt holds it, read under a share lock on PostgreSQL, so a take-over
# (an UPDATE of that row) waits for this transaction or this one sees the new attempt;
# SQLite's BEGIN IMMEDIATE serialises them anyway. No extra statement a step: the check
# is in the write's own WHERE, and its row count tells.
_HELD = select(literal(1)).where(
    jobs.c.flight == bindparam("flight"), jobs.c.job == bindparam("job"), _FENCED
)
_INSERT_STEP_FENCED = DriverStatement(
    insert(steps).from_select(
        list(_STEP_COLUMNS),
        select(*(bindparam(c, type_=steps.c[c].type) for c in _STEP_COLUMNS))
        .where(jobs.c.flight == bindparam("flight"), jobs.c.job == bindparam("job"), _FENCED)
        .with_for_update(read=True),
    )
)
_FINISH_STEP_FENCED = DriverStatement(
    update(steps)
    .where(
        steps.c.flight == bindparam("flight"),
        steps.c.job == bindparam("job"),
        steps.c.stepno == bindparam("n"),
        exists(_HELD.with_for_update(read=True)),
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
    attempt: int | None = None,
) -> None:
    """Insert a step's row. With `attempt` (a runner's write), fenced: raises LeaseLost
    when the job has changed hands since that attempt claimed it."""
    params = {
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
    }
    if attempt is None:
        _INSERT_STEP(conn, params)
    elif _INSERT_STEP_FENCED(conn, {**params, "a": attempt}) != 1:
        raise LeaseLost(f"{flight}.{job}: attempt {attempt} was taken over")


def finish_step(
    conn: Connection,
    flight: int,
    job: str,
    stepno: int,
    status: str,
    reason: str | None = None,
    attempt: int | None = None,
) -> None:
    """A step's result. With `attempt`, fenced like start_step."""
    if attempt is None:
        _FINISH_STEP(
            conn,
            {
                "f": flight,
                "j": job,
                "n": stepno,
                "st": str(status),
                "fin": time.time(),
                "why": reason,
            },
        )
        return
    params = {
        "flight": flight,
        "job": job,
        "n": stepno,
        "a": attempt,
        "st": str(status),
        "fin": time.time(),
        "why": reason,
    }
    if _FINISH_STEP_FENCED(conn, params) != 1:
        raise LeaseLost(f"{flight}.{job}: attempt {attempt} was taken over")


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
