"""What hosts do to jobs: a host that breaks a job (unreachable, connection lost, key
refused) is recorded in its history (host_events, kind `broke`), the job is not given it
again, and a host that broke `bad_after` jobs in a row, or whose key changed, goes `bad`
until the health-check job passes on it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from pushgate.db import hosts as dbh
from pushgate.db.schema import flights, host_events, hosts, jobs

BROKE = "broke"


def _key(flight: int, job: str, attempt: int | None) -> str:
    return f"{flight} {job} {attempt}"


def record_break(
    conn: Connection,
    host: str,
    flight: int,
    job: str,
    attempt: int,
    why: str,
    by: str,
    *,
    bad_after: int,
    bad_now: bool = False,
) -> bool:
    """Record that `host` broke this attempt of the job; mark the host bad when bad_now
    (its key changed) or when its last `bad_after` jobs all broke. True if it went bad."""
    dbh.add_event(conn, host, BROKE, _key(flight, job, attempt), why, by)
    if not bad_now:
        recent = dbh.allocations(conn, host, limit=bad_after)
        if len(recent) < bad_after:
            return False
        broke = {
            r.value
            for r in conn.execute(
                select(host_events.c.value)
                .where(host_events.c.host == host, host_events.c.kind == BROKE)
                .order_by(host_events.c.at.desc())
                .limit(10 * bad_after)
            )
        }
        if not all(_key(a.flight, a.job, a.attempt) in broke for a in recent):
            return False
        why = f"broke its last {bad_after} jobs (the last: {why})"
    health = conn.execute(select(hosts.c.health).where(hosts.c.host == host)).scalar()
    if health in ("bad", "maintenance"):
        return False
    # Bad until the health-check job passes on it (run by the workers' checker).
    return dbh.set_health(conn, host, "bad", why, by, check=True)


def hosts_that_broke(conn: Connection, flight: int) -> dict[str, set[str]]:
    """job -> the hosts that broke an attempt of it in this flight (not to be used again
    for it)."""
    out: dict[str, set[str]] = {}
    prefix = f"{flight} "
    for host, value in conn.execute(
        select(host_events.c.host, host_events.c.value).where(
            host_events.c.kind == BROKE, host_events.c.value.startswith(prefix, autoescape=True)
        )
    ):
        job = value[len(prefix) :].rsplit(" ", 1)[0]
        out.setdefault(job, set()).add(host)
    return out


def rerun_possible(
    conn: Connection,
    flight: int,
    job: str,
    flags: frozenset[str],
    retries: int,
    pinned: bool = False,
) -> bool:
    """Whether a job a host broke may run again: it has retries left and another usable
    host with its flags exists that has not broken it (never for a job pinned to its
    host: a bisection probe, a health check)."""
    if pinned:
        return False
    avoid = hosts_that_broke(conn, flight).get(job, set())
    if len(avoid) > retries:
        return False
    return any(
        flags <= h.flags and h.host not in avoid and h.health in dbh.USABLE_HEALTHS
        for h in dbh.list_hosts(conn)
    )


def health_check_passed(conn: Connection, host: str, job: str, by: str) -> bool:
    """The health-check job passed on the host: it is good again. True if it changed."""
    row = conn.execute(select(hosts.c.health, hosts.c.check_due).where(hosts.c.host == host))
    got = row.first()
    if got is None or got.health == "maintenance":
        return False
    if got.health == "good" and got.check_due is None:
        return False
    return dbh.set_health(conn, host, "good", f"health-check job {job} passed", by)


@dataclass(frozen=True)
class CheckDue:
    host: str
    health: str
    flags: frozenset[str]
    held: bool
    # The health-check flight queued for it, and that flight's end (None: unfinished).
    flight: int | None
    finished: float | None
    # The check job's status in that flight.
    status: str | None


def checks_due(conn: Connection, job: str, now: float) -> list[CheckDue]:
    """Hosts due a health check, with their check flight (if any) and how it went."""
    out = []
    for r in conn.execute(select(hosts).where(hosts.c.check_due.is_not(None))):
        fin = status = None
        if r.check_flight is not None:
            fin = conn.execute(
                select(flights.c.finished).where(flights.c.flight == r.check_flight)
            ).scalar()
            status = conn.execute(
                select(jobs.c.status).where(jobs.c.flight == r.check_flight, jobs.c.job == job)
            ).scalar()
        out.append(
            CheckDue(
                r.host,
                r.health,
                frozenset(f for f in r.flags.split(",") if f),
                r.held_until is not None and r.held_until >= now,
                r.check_flight,
                fin,
                status,
            )
        )
    return out


def set_check_flight(conn: Connection, host: str, flight: int | None, was: int | None) -> bool:
    """Record the host's health-check flight if it is still `was` (one checker wins)."""
    cond = hosts.c.check_flight.is_(None) if was is None else hosts.c.check_flight == was
    res = conn.execute(
        update(hosts)
        .where(hosts.c.host == host, hosts.c.check_due.is_not(None), cond)
        .values(check_flight=flight)
    )
    return res.rowcount == 1


def check_failed(conn: Connection, host: str, flight: int, status: str, by: str) -> bool:
    """The health-check flight ended without a pass: the host is bad, and no check is
    tried again until a person sets its health `unknown`."""
    q = select(hosts.c.check_flight).where(hosts.c.host == host)
    if conn.execute(q).scalar() != flight:
        return False
    why = f"health-check flight {flight}: {status}, not pass"
    return dbh.set_health(conn, host, "bad", why, by)
