"""Queries of push decisions (one row per flight, unique: two processes racing leave one)
and of the operator's block/force state of each branch."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from pushgate.db.schema import (
    gate_state,
    pushes,
)

# --- pushes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushRow:
    flight: int
    branch: str
    tree: str
    revision: str
    expected_old: str | None
    status: str
    output: str
    created: float
    finished: float | None
    why: str | None = None
    """Why the gate decided so: `tolerable`, `not tolerable`, `blocked: ...`, `forced`..."""
    decided_by: str | None = None
    """Who gave the block or force that decided it (None: the verdict alone decided)."""


def get_push(conn: Connection, flight: int) -> PushRow | None:
    r = conn.execute(select(pushes).where(pushes.c.flight == flight)).first()
    if r is None:
        return None
    return PushRow(
        r.flight,
        r.branch,
        r.tree,
        r.revision,
        r.expected_old,
        r.status,
        r.output,
        r.created,
        r.finished,
        r.why,
        r.decided_by,
    )


def insert_push(
    conn: Connection,
    *,
    flight: int,
    branch: str,
    tree: str,
    revision: str,
    expected_old: str | None,
    status: str,
    output: str = "",
    why: str | None = None,
    decided_by: str | None = None,
) -> None:
    now = time.time()
    conn.execute(
        insert(pushes).values(
            flight=flight,
            branch=branch,
            tree=tree,
            revision=revision,
            expected_old=expected_old,
            status=status,
            output=output,
            created=now,
            finished=None if status == "pending" else now,
            why=why,
            decided_by=decided_by,
        )
    )


def finish_push(conn: Connection, flight: int, status: str, output: str) -> None:
    conn.execute(
        update(pushes)
        .where(pushes.c.flight == flight)
        .values(status=status, output=output, finished=time.time())
    )


def repend_push(
    conn: Connection,
    flight: int,
    *,
    from_status: str,
    why: str | None,
    decided_by: str | None,
    note: str,
) -> bool:
    """Make a decision that did not move the tested ref (`from_status`: failed, or
    not-pushed by a block since lifted) pending again, its output kept with `note` after
    it; False if the row is no longer in from_status (another process took it)."""
    done = conn.execute(
        update(pushes)
        .where(pushes.c.flight == flight, pushes.c.status == from_status)
        .values(
            status="pending",
            why=why,
            decided_by=decided_by,
            output=pushes.c.output + note,
            finished=None,
        )
    )
    return done.rowcount == 1


def pushes_of(conn: Connection, branch: str) -> list[PushRow]:
    q = select(pushes.c.flight).where(pushes.c.branch == branch).order_by(pushes.c.flight)
    out = []
    for (f,) in conn.execute(q):
        row = get_push(conn, f)
        if row:
            out.append(row)
    return out


# --- block / force ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateState:
    branch: str
    blocked_why: str | None = None
    force: bool = False
    force_revision: str | None = None
    by: str | None = None
    """Who gave the current block or force."""


def get_gate(conn: Connection, branch: str) -> GateState:
    r = conn.execute(select(gate_state).where(gate_state.c.branch == branch)).first()
    if r is None:
        return GateState(branch)
    return GateState(branch, r.blocked_why, bool(r.force), r.force_revision, r.updated_by)


def put_gate(conn: Connection, state: GateState) -> None:
    values = {
        "blocked_why": state.blocked_why,
        "force": state.force,
        "force_revision": state.force_revision,
        "updated": time.time(),
        "updated_by": state.by,
    }
    done = conn.execute(
        update(gate_state).where(gate_state.c.branch == state.branch).values(**values)
    )
    if done.rowcount == 0:
        conn.execute(insert(gate_state).values(branch=state.branch, **values))
