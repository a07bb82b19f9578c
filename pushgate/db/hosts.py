"""Hosts and their slots: registration, claims with leases, release.

A slot is claimed by a conditional UPDATE of a free (or expired) row, inside
a write transaction (BEGIN IMMEDIATE on SQLite, row locks with SKIP LOCKED on
PostgreSQL), so no slot is ever held by two jobs (invariant 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, delete, insert, or_, select, update

from pushgate.db.engine import DriverStatement
from pushgate.db.schema import host_allocations, host_slots, hosts


@dataclass(frozen=True)
class HostRow:
    host: str
    executor: str
    slots: int
    flags: frozenset[str]
    health: str


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
            r.host, r.executor, r.slots, frozenset(f for f in r.flags.split(",") if f), r.health
        )
        for r in conn.execute(select(hosts).order_by(hosts.c.host))
    ]


# Prebuilt statements: claims and releases run once per job on the hot path.
_FREE = or_(host_slots.c.flight.is_(None), host_slots.c.lease_until < bindparam("b_now"))
_FIND_FREE_CORE = (
    select(host_slots.c.slot)
    .where(host_slots.c.host == bindparam("b_host"), _FREE)
    .order_by(host_slots.c.slot)
    .limit(1)
)
_FIND_FREE = DriverStatement(_FIND_FREE_CORE)
# PostgreSQL: a slot row another claim holds is skipped, not waited for.
_FIND_FREE_PG = DriverStatement(_FIND_FREE_CORE.with_for_update(skip_locked=True))
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
) -> Claim | None:
    """Claim a free slot on the first of `host_names` that has one, for `attempt` of the job."""
    now = time.time() if now is None else now
    find = _FIND_FREE_PG if conn.dialect.name == "postgresql" else _FIND_FREE
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


def release_job_slots(conn: Connection, flight: int, job: str, attempt: int) -> None:
    """Free whatever slots one attempt of a (crashed or taken-over) job still holds."""
    now = time.time()
    conn.execute(
        update(host_slots)
        .where(
            host_slots.c.flight == flight, host_slots.c.job == job, host_slots.c.attempt == attempt
        )
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


_HELD = DriverStatement(
    select(host_slots.c.host, host_slots.c.slot, host_slots.c.flight, host_slots.c.job).where(
        host_slots.c.flight.is_not(None)
    )
)


def held_slots(conn: Connection) -> list[tuple[str, int, int, str]]:
    """(host, slot, flight, job) of every held slot (read once per scheduling round)."""
    return [(h, int(s), int(f), j) for h, s, f, j in _HELD.rows(conn, {})]
