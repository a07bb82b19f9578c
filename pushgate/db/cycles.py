"""Queries of gate cycles: a cycle's stage and plan, and the branch history the gate
plans from (revisions tested, push age).

Every function takes an open connection; the caller owns the transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from pushgate.db.schema import (
    flight_built,
    flight_revisions,
    flights,
    gate_cycles,
)

# --- cycle state --------------------------------------------------------------------------


@dataclass(frozen=True)
class CycleRow:
    flight: int
    branch: str
    tree: str
    mode: str
    target: str
    that_revision: str | None
    expected_old: str | None
    reason: str
    retest_flight: int | None
    retest_note: str | None
    stage: str
    created: float
    updated: float = 0.0
    """When the cycle last moved on (its end, once `done`)."""


def _cycle(row: Any) -> CycleRow:
    return CycleRow(
        row.flight,
        row.branch,
        row.tree,
        row.mode,
        row.target,
        row.that_revision,
        row.expected_old,
        row.reason,
        row.retest_flight,
        row.retest_note,
        row.stage,
        row.created,
        row.updated,
    )


def insert_cycle(
    conn: Connection,
    *,
    flight: int,
    branch: str,
    tree: str,
    mode: str,
    target: str,
    that_revision: str | None,
    expected_old: str | None,
    reason: str,
) -> None:
    now = time.time()
    conn.execute(
        insert(gate_cycles).values(
            flight=flight,
            branch=branch,
            tree=tree,
            mode=mode,
            target=target,
            that_revision=that_revision,
            expected_old=expected_old,
            reason=reason,
            stage="flight",
            created=now,
            updated=now,
        )
    )


def get_cycle(conn: Connection, flight: int) -> CycleRow | None:
    row = conn.execute(select(gate_cycles).where(gate_cycles.c.flight == flight)).first()
    return _cycle(row) if row else None


def latest_cycle(conn: Connection, branch: str, *, open_only: bool = False) -> CycleRow | None:
    """The branch's newest cycle (only an unfinished one with open_only)."""
    q = select(gate_cycles).where(gate_cycles.c.branch == branch)
    if open_only:
        q = q.where(gate_cycles.c.stage != "done")
    row = conn.execute(q.order_by(gate_cycles.c.flight.desc()).limit(1)).first()
    return _cycle(row) if row else None


def list_cycles(conn: Connection, branch: str) -> list[CycleRow]:
    q = select(gate_cycles).where(gate_cycles.c.branch == branch).order_by(gate_cycles.c.flight)
    return [_cycle(r) for r in conn.execute(q)]


def set_stage(conn: Connection, flight: int, stage: str, **fields: Any) -> None:
    allowed = {"retest_flight", "retest_note"}
    if set(fields) - allowed:
        raise ValueError(f"unknown cycle fields {sorted(set(fields) - allowed)}")
    conn.execute(
        update(gate_cycles)
        .where(gate_cycles.c.flight == flight)
        .values(stage=stage, updated=time.time(), **fields)
    )


def retest_parent(conn: Connection, flight: int) -> int | None:
    """The main flight whose cycle made `flight` as its retest, if any."""
    row = conn.execute(
        select(gate_cycles.c.flight).where(gate_cycles.c.retest_flight == flight)
    ).first()
    return int(row[0]) if row else None


def child_flights(conn: Connection, flight: int, bless_as: str) -> list[int]:
    """Flights made for `flight` (retests, bisections) with the given final blessing."""
    q = (
        select(flights.c.flight)
        .where(flights.c.parent_flight == flight, flights.c.bless_as == bless_as)
        .order_by(flights.c.flight)
    )
    return [int(f) for (f,) in conn.execute(q)]


def flight_finished(conn: Connection, flight: int) -> bool:
    row = conn.execute(select(flights.c.finished).where(flights.c.flight == flight)).first()
    return row is not None and row[0] is not None


# --- history the gate needs -------------------------------------------------------------------


def revision_tested(
    conn: Connection, branch: str, tree: str, revision: str, blessing: str = "real"
) -> bool:
    """Some finished flight of the branch built exactly `revision` of `tree` (§2.5)."""
    q = (
        select(flight_built.c.flight)
        .join(flights, flights.c.flight == flight_built.c.flight)
        .where(
            flights.c.branch == branch,
            flights.c.blessing == blessing,
            flight_built.c.tree == tree,
            flight_built.c.revision == revision,
        )
        .limit(1)
    )
    return conn.execute(q).first() is not None


def latest_tested_revision(
    conn: Connection, branch: str, tree: str, blessing: str = "real"
) -> str | None:
    """The revision of `tree` built by the branch's newest finished flight that built one."""
    q = (
        select(flight_built.c.revision)
        .join(flights, flights.c.flight == flight_built.c.flight)
        .where(
            flights.c.branch == branch,
            flights.c.blessing == blessing,
            flight_built.c.tree == tree,
            flight_built.c.revision.is_not(None),
        )
        .order_by(flights.c.flight.desc())
        .limit(1)
    )
    row = conn.execute(q).first()
    return str(row[0]) if row else None


@dataclass(frozen=True)
class AgeFlight:
    flight: int
    revision: str
    started: float


def branch_flight_revisions(
    conn: Connection,
    branch: str,
    tree: str,
    max_flight: int,
    blessings: tuple[str, ...] = ("real",),
) -> list[AgeFlight]:
    """(flight, targeted revision of tree, start) of the branch's main flights up to
    max_flight, ascending; the reported flight counts even while still unblessed."""
    q = (
        select(flights.c.flight, flight_revisions.c.revision, flights.c.started, flights.c.created)
        .join(flight_revisions, flight_revisions.c.flight == flights.c.flight)
        .where(
            flights.c.branch == branch,
            flight_revisions.c.tree == tree,
            flights.c.flight <= max_flight,
            (flights.c.blessing.in_(blessings)) | (flights.c.flight == max_flight),
        )
        .order_by(flights.c.flight)
    )
    return [
        AgeFlight(int(f), str(r), float(s if s is not None else c))
        for f, r, s, c in conn.execute(q)
    ]
