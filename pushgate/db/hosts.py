"""Hosts and their slots: registration, claims with leases, release.

A slot is claimed by a conditional UPDATE of a free (or expired) row, inside
a write transaction (BEGIN IMMEDIATE on SQLite, row locks with SKIP LOCKED on
PostgreSQL), so no slot is ever held by two jobs (invariant 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from pushgate.db.engine import DriverStatement
from pushgate.db.schema import host_allocations, host_events, host_slots, hosts

# A host's health, apart from its state: jobs are allocated only good or unknown hosts
# (a new host, or one whose worker died on it, is unknown until a health check).
HEALTHS = ("good", "unknown", "bad", "maintenance")
USABLE_HEALTHS = ("good", "unknown")


@dataclass(frozen=True)
class HostRow:
    host: str
    executor: str
    slots: int
    flags: frozenset[str]
    health: str
    health_why: str | None = None
    held_by: str | None = None
    held_until: float | None = None
    held_why: str | None = None

    def usable(self, now: float) -> bool:
        """Whether a job may be allocated a slot of it now (healthy, not held)."""
        return self.health in USABLE_HEALTHS and (self.held_until is None or self.held_until < now)


@dataclass(frozen=True)
class Claim:
    host: str
    slot: int
    # The job's attempt holding the slot: only it may renew or release it (invariant 8).
    attempt: int = 0


def sync_hosts(conn: Connection, wanted: dict[str, tuple[str, int, list[str]]]) -> None:
    """Make the hosts table match the config: name -> (executor, slots, flags).

    Slots beyond a shrunk count are removed only when free; hosts not in the
    config are kept (another farm member may use them).
    """
    if conn.dialect.name == "postgresql":
        # Two runners starting at once would both insert a new host (a unique violation):
        # serialise the sync (SQLite's BEGIN IMMEDIATE already does).
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7305841120)")
    now = time.time()
    existing = {r.host: r for r in conn.execute(select(hosts))}
    for name, (executor, nslots, flags) in wanted.items():
        flagtext = ",".join(sorted(set(flags)))
        if name in existing:
            conn.execute(
                update(hosts)
                .where(hosts.c.host == name)
                .values(executor=executor, slots=nslots, flags=flagtext, updated=now)
            )
        else:
            conn.execute(
                insert(hosts).values(
                    host=name,
                    executor=executor,
                    slots=nslots,
                    flags=flagtext,
                    state="idle",
                    health="unknown",
                    updated=now,
                )
            )
        have = {
            r.slot for r in conn.execute(select(host_slots.c.slot).where(host_slots.c.host == name))
        }
        missing = [s for s in range(nslots) if s not in have]
        if missing:
            conn.execute(insert(host_slots), [{"host": name, "slot": s} for s in missing])
        conn.execute(
            delete(host_slots).where(
                host_slots.c.host == name,
                host_slots.c.slot >= nslots,
                host_slots.c.flight.is_(None),
            )
        )


def list_hosts(conn: Connection) -> list[HostRow]:
    return [
        HostRow(
            r.host,
            r.executor,
            r.slots,
            frozenset(f for f in r.flags.split(",") if f),
            r.health,
            r.health_why,
            r.held_by,
            r.held_until,
            r.held_why,
        )
        for r in conn.execute(select(hosts).order_by(hosts.c.host))
    ]


# Prebuilt statements: claims and releases run once per job on the hot path.
# Free: held by no job. A slot whose lease ran out is not free until the reaper has taken
# its job over, killed what it may still run and released it (scheduler.recover): a
# worker that is stopped, not dead, may still run steps on the host (invariant 2).
_FREE = host_slots.c.flight.is_(None)
# The slot's host may take a job: healthy and not held by a person (checked in the claim's
# own statement, so a health change or a hold is seen by the next claim, whoever makes it).
# A host due a health check takes no job but the check (below).
_NOT_HELD = or_(hosts.c.held_until.is_(None), hosts.c.held_until < bindparam("b_now"))
_USABLE = exists(
    select(hosts.c.host).where(
        hosts.c.host == host_slots.c.host,
        or_(*(hosts.c.health == h for h in USABLE_HEALTHS)),
        hosts.c.check_due.is_(None),
        _NOT_HELD,
    )
)
# The health-check job (of a health-check flight, pinned to the host) may also run on a
# bad host or one due a check: not in maintenance, not held by a person.
CHECKABLE_HEALTHS = ("good", "unknown", "bad")
_CHECKABLE = exists(
    select(hosts.c.host).where(
        hosts.c.host == host_slots.c.host,
        or_(*(hosts.c.health == h for h in CHECKABLE_HEALTHS)),
        _NOT_HELD,
    )
)


def _find_free(usable: object) -> tuple[DriverStatement, DriverStatement]:
    core = (
        select(host_slots.c.slot)
        .where(host_slots.c.host == bindparam("b_host"), _FREE, usable)  # type: ignore[arg-type]
        .order_by(host_slots.c.slot)
        .limit(1)
    )
    # PostgreSQL: a slot row another claim holds is skipped, not waited for.
    return DriverStatement(core), DriverStatement(core.with_for_update(skip_locked=True))


_FIND_FREE, _FIND_FREE_PG = _find_free(_USABLE)
_FIND_CHECK, _FIND_CHECK_PG = _find_free(_CHECKABLE)
_TAKE = DriverStatement(
    update(host_slots)
    .where(
        host_slots.c.host == bindparam("b_host"), host_slots.c.slot == bindparam("b_slot"), _FREE
    )
    .values(
        flight=bindparam("b_f"),
        job=bindparam("b_j"),
        runner=bindparam("b_runner"),
        lease_until=bindparam("b_until"),
        attempt=bindparam("b_a"),
    )
)
_RECORD = DriverStatement(
    insert(host_allocations).values(
        {c: bindparam(c) for c in ("host", "slot", "flight", "job", "attempt", "allocated")}
    )
)
# The slot as held by one attempt of one job: a stale attempt matches nothing.
_HELD_BY = (
    host_slots.c.host == bindparam("b_host"),
    host_slots.c.slot == bindparam("b_slot"),
    host_slots.c.flight == bindparam("b_f"),
    host_slots.c.job == bindparam("b_j"),
    host_slots.c.attempt == bindparam("b_a"),
)
_FREE_SLOT = DriverStatement(
    update(host_slots)
    .where(*_HELD_BY)
    .values(flight=None, job=None, runner=None, lease_until=None, attempt=None)
)
_RELEASED = DriverStatement(
    update(host_allocations)
    .where(
        host_allocations.c.host == bindparam("b_host"),
        host_allocations.c.slot == bindparam("b_slot"),
        host_allocations.c.flight == bindparam("b_f"),
        host_allocations.c.job == bindparam("b_j"),
        host_allocations.c.attempt == bindparam("b_a"),
        host_allocations.c.released.is_(None),
    )
    .values(released=bindparam("b_now"))
)
_RENEW_SLOT = DriverStatement(
    update(host_slots).where(*_HELD_BY).values(lease_until=bindparam("b_until"))
)


def claim_slot(
    conn: Connection,
    host_names: list[str],
    flight: int,
    job: str,
    runner: str,
    lease_until: float,
    now: float | None = None,
    attempt: int = 0,
    check: bool = False,
) -> Claim | None:
    """Claim a free slot on the first of `host_names` that has one, for `attempt` of the job
    (`check`: the job of a health-check flight, which may use a bad host)."""
    now = time.time() if now is None else now
    pg = conn.dialect.name == "postgresql"
    if check:
        find = _FIND_CHECK_PG if pg else _FIND_CHECK
    else:
        find = _FIND_FREE_PG if pg else _FIND_FREE
    for name in host_names:
        found = find.rows(conn, {"b_host": name, "b_now": now})
        if not found:
            continue
        slot = found[0][0]
        changed = _TAKE(
            conn,
            {
                "b_host": name,
                "b_slot": slot,
                "b_now": now,
                "b_f": flight,
                "b_j": job,
                "b_runner": runner,
                "b_until": lease_until,
                "b_a": attempt,
            },
        )
        if changed != 1:
            continue
        _RECORD(
            conn,
            {
                "host": name,
                "slot": slot,
                "flight": flight,
                "job": job,
                "attempt": attempt,
                "allocated": now,
            },
        )
        return Claim(name, slot, attempt)
    return None


def _held_by(claim: Claim, flight: int, job: str) -> dict[str, object]:
    return {
        "b_host": claim.host,
        "b_slot": claim.slot,
        "b_f": flight,
        "b_j": job,
        "b_a": claim.attempt,
    }


def release_slot(conn: Connection, claim: Claim, flight: int, job: str) -> bool:
    """Free the slot if the claim's attempt still holds it; False (nothing written) if not."""
    params = _held_by(claim, flight, job)
    if _FREE_SLOT(conn, params) != 1:
        return False
    _RELEASED(conn, {**params, "b_now": time.time()})
    return True


def renew_slot(conn: Connection, claim: Claim, flight: int, job: str, lease_until: float) -> bool:
    """Extend the slot's lease; False if the claim's attempt no longer holds it."""
    return _RENEW_SLOT(conn, {**_held_by(claim, flight, job), "b_until": lease_until}) == 1


def release_job_slots(conn: Connection, flight: int, job: str, attempt: int) -> list[str]:
    """Free whatever slots one attempt of a (crashed or taken-over) job still holds;
    the hosts they were on."""
    now = time.time()
    held = (host_slots.c.flight == flight, host_slots.c.job == job, host_slots.c.attempt == attempt)
    freed = [r.host for r in conn.execute(select(host_slots.c.host).where(*held))]
    conn.execute(
        update(host_slots)
        .where(*held)
        .values(flight=None, job=None, runner=None, lease_until=None, attempt=None)
    )
    conn.execute(
        update(host_allocations)
        .where(
            and_(
                host_allocations.c.flight == flight,
                host_allocations.c.job == job,
                host_allocations.c.attempt == attempt,
                host_allocations.c.released.is_(None),
            )
        )
        .values(released=now)
    )
    return freed


_HELD = DriverStatement(
    select(host_slots.c.host, host_slots.c.slot, host_slots.c.flight, host_slots.c.job).where(
        host_slots.c.flight.is_not(None)
    )
)


def held_slots(conn: Connection) -> list[tuple[str, int, int, str]]:
    """(host, slot, flight, job) of every held slot (read once per scheduling round)."""
    return [(h, int(s), int(f), j) for h, s, f, j in _HELD.rows(conn, {})]


# Free slots of the usable hosts, by host (a usable host with none free: 0; an unusable
# host: absent). One statement a scheduling round.
_FREE_BY_HOST, _FREE_FOR_CHECK = (
    DriverStatement(
        select(host_slots.c.host, func.sum(case((_FREE, 1), else_=0)))
        .where(usable)
        .group_by(host_slots.c.host)
    )
    for usable in (_USABLE, _CHECKABLE)
)


def free_slots(conn: Connection, now: float | None = None, check: bool = False) -> dict[str, int]:
    """host -> free slots, for the hosts a job may be allocated now (`check`: the hosts
    a health-check job may use)."""
    now = time.time() if now is None else now
    stmt = _FREE_FOR_CHECK if check else _FREE_BY_HOST
    return {h: int(n or 0) for h, n in stmt.rows(conn, {"b_now": now})}


class HostError(Exception):
    """Base of the host-control errors the CLI turns into PushgateErrors."""


def add_event(conn: Connection, host: str, kind: str, value: str, why: str, by: str) -> None:
    conn.execute(
        insert(host_events).values(
            host=host, at=time.time(), kind=kind, value=value, why=why, by=by
        )
    )


def set_health(
    conn: Connection, host: str, health: str, why: str, by: str, *, check: bool = False
) -> bool:
    """Set a host's health (recorded in its history); False if there is no such host.
    `check`: the host takes no job but the health check until that passes on it; else
    any check it was due is dropped."""
    if health not in HEALTHS:
        raise ValueError(health)
    now = time.time()
    res = conn.execute(
        update(hosts)
        .where(hosts.c.host == host)
        .values(
            health=health,
            health_why=why,
            health_by=by,
            health_changed=now,
            check_due=now if check else None,
            check_flight=None,
        )
    )
    if res.rowcount != 1:
        return False
    add_event(conn, host, "health", health, why, by)
    return True


def needs_check(conn: Connection, host: str, why: str, by: str, *, check: bool = False) -> None:
    """A host whose job's worker vanished: `unknown` until a health check says otherwise
    (a bad host or one in maintenance stays so). `check` (a health-check job is
    configured): no job but the check is given it until the check passes."""
    q = select(hosts.c.health, hosts.c.check_due).where(hosts.c.host == host)
    row = conn.execute(q).first()
    fresh = row is not None and row.health == "unknown" and row.check_due is None
    if row is not None and (row.health == "good" or (check and fresh)):
        set_health(conn, host, "unknown", why, by, check=check)
    else:
        add_event(conn, host, "reaped", row.health if row else "-", why, by)


@dataclass(frozen=True)
class Hold:
    host: str
    until: float
    # Slots still running jobs when the hold began: the person waits for them to end.
    busy: int


def hold_host(
    conn: Connection, flags: frozenset[str], until: float, by: str, why: str
) -> Hold | None:
    """A person takes a host that has `flags`, ahead of every queued job: from now on
    no job is allocated a slot of it. An idle healthy one is preferred, else the one with
    fewest busy slots. None if no healthy, unheld host has the flags."""
    now = time.time()
    pg = conn.dialect.name == "postgresql"
    cands = [h for h in list_hosts(conn) if flags <= h.flags and h.usable(now)]
    best: tuple[int, str] | None = None
    for h in cands:
        q = select(host_slots.c.flight, host_slots.c.lease_until).where(host_slots.c.host == h.host)
        if pg:
            # Slot rows locked: a claim in flight commits first (and is counted busy),
            # and no claim starts on the host until the hold commits.
            q = q.with_for_update()
        busy = sum(
            1 for r in conn.execute(q) if r.flight is not None and (r.lease_until or 0) >= now
        )
        if best is None or busy < best[0]:
            best = (busy, h.host)
        if busy == 0:
            break
    if best is None:
        return None
    busy, name = best
    conn.execute(
        update(hosts)
        .where(hosts.c.host == name)
        .values(held_by=by, held_until=until, held_why=why, state="allocated")
    )
    add_event(conn, name, "hold", time.strftime("%Y-%m-%d %H:%M", time.gmtime(until)), why, by)
    return Hold(name, until, busy)


def release_hold(conn: Connection, host: str, by: str) -> bool:
    """End a person's hold of a host early; False if it was not held."""
    res = conn.execute(
        update(hosts)
        .where(hosts.c.host == host, hosts.c.held_until.is_not(None))
        .values(held_by=None, held_until=None, held_why=None, state="idle")
    )
    if res.rowcount != 1:
        return False
    add_event(conn, host, "release", "idle", "hold ended", by)
    return True


@dataclass(frozen=True)
class Allocation:
    host: str
    slot: int
    flight: int
    job: str
    attempt: int | None
    allocated: float
    released: float | None


def _allocation(r: object) -> Allocation:
    return Allocation(
        r.host,  # type: ignore[attr-defined]
        int(r.slot),  # type: ignore[attr-defined]
        int(r.flight),  # type: ignore[attr-defined]
        r.job,  # type: ignore[attr-defined]
        r.attempt,  # type: ignore[attr-defined]
        r.allocated,  # type: ignore[attr-defined]
        r.released,  # type: ignore[attr-defined]
    )


def allocations(
    conn: Connection, host: str | None = None, limit: int | None = None
) -> list[Allocation]:
    """Allocation history, newest first (one host's, or all)."""
    q = select(host_allocations).order_by(
        host_allocations.c.allocated.desc(), host_allocations.c.id.desc()
    )
    if host is not None:
        q = q.where(host_allocations.c.host == host)
    if limit is not None:
        q = q.limit(limit)
    return [_allocation(r) for r in conn.execute(q)]


def current_allocations(conn: Connection) -> list[Allocation]:
    """The allocations not released yet."""
    q = select(host_allocations).where(host_allocations.c.released.is_(None))
    return [_allocation(r) for r in conn.execute(q.order_by(host_allocations.c.host))]


@dataclass(frozen=True)
class HostEvent:
    host: str
    at: float
    kind: str
    value: str
    why: str
    by: str


def host_events_of(conn: Connection, host: str, limit: int = 200) -> list[HostEvent]:
    q = (
        select(host_events)
        .where(host_events.c.host == host)
        .order_by(host_events.c.at.desc(), host_events.c.id.desc())
        .limit(limit)
    )
    return [HostEvent(r.host, r.at, r.kind, r.value, r.why, r.by) for r in conn.execute(q)]
