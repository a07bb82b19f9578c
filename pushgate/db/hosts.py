"""Hosts and their slots: registration, claims with leases, release.

A slot is claimed by a conditional UPDATE of a free (or expired) row, inside
a write transaction (BEGIN IMMEDIATE on SQLite, row locks with SKIP LOCKED on
PostgreSQL), so no slot is ever held by two jobs (invariant 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

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


def sync_hosts(conn: Connection, wanted: dict[str, tuple[str, int, list[str]]]) -> None:
    """Make the hosts table match the config: name -> (executor, slots, flags).

    Slots beyond a shrunk count are removed only when free; hosts not in the
    config are kept (another farm member may use them).
    """
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


def claim_slot(
    conn: Connection,
    host_names: list[str],
    flight: int,
    job: str,
    runner: str,
    lease_until: float,
    now: float | None = None,
) -> Claim | None:
    """Claim a free slot on the first of `host_names` that has one."""
    now = time.time() if now is None else now
    free = or_(host_slots.c.flight.is_(None), host_slots.c.lease_until < now)
    for name in host_names:
        q = (
            select(host_slots.c.slot)
            .where(host_slots.c.host == name, free)
            .order_by(host_slots.c.slot)
            .limit(1)
        )
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        slot = conn.execute(q).scalar_one_or_none()
        if slot is None:
            continue
        res = conn.execute(
            update(host_slots)
            .where(host_slots.c.host == name, host_slots.c.slot == slot, free)
            .values(flight=flight, job=job, runner=runner, lease_until=lease_until)
        )
        if res.rowcount != 1:
            continue
        conn.execute(
            insert(host_allocations).values(
                host=name, slot=slot, flight=flight, job=job, allocated=now
            )
        )
        return Claim(name, slot)
    return None


def release_slot(conn: Connection, claim: Claim, flight: int, job: str) -> None:
    now = time.time()
    conn.execute(
        update(host_slots)
        .where(
            host_slots.c.host == claim.host,
            host_slots.c.slot == claim.slot,
            host_slots.c.flight == flight,
            host_slots.c.job == job,
        )
        .values(flight=None, job=None, runner=None, lease_until=None)
    )
    conn.execute(
        update(host_allocations)
        .where(
            host_allocations.c.host == claim.host,
            host_allocations.c.slot == claim.slot,
            host_allocations.c.flight == flight,
            host_allocations.c.job == job,
            host_allocations.c.released.is_(None),
        )
        .values(released=now)
    )


def release_job_slots(conn: Connection, flight: int, job: str) -> None:
    """Free whatever slots a (crashed) job still holds."""
    now = time.time()
    conn.execute(
        update(host_slots)
        .where(host_slots.c.flight == flight, host_slots.c.job == job)
        .values(flight=None, job=None, runner=None, lease_until=None)
    )
    conn.execute(
        update(host_allocations)
        .where(
            and_(
                host_allocations.c.flight == flight,
                host_allocations.c.job == job,
                host_allocations.c.released.is_(None),
            )
        )
        .values(released=now)
    )


def heartbeat_slots(conn: Connection, runner: str, lease_until: float) -> None:
    conn.execute(
        update(host_slots).where(host_slots.c.runner == runner).values(lease_until=lease_until)
    )


def held_slots(conn: Connection) -> list[tuple[str, int, int, str]]:
    """(host, slot, flight, job) of every held slot."""
    q = select(host_slots.c.host, host_slots.c.slot, host_slots.c.flight, host_slots.c.job).where(
        host_slots.c.flight.is_not(None)
    )
    return [(r.host, r.slot, r.flight, r.job) for r in conn.execute(q)]
