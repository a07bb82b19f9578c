"""Queries of the push gate: cycle state, pushes, block/force, the mail queue, push-age.

Every function takes an open connection; the caller owns the transaction (a
`Database.write()` for changes). Inserts that must happen once (a push decision,
a queued mail) rely on the tables' unique keys, so two processes racing on them
leave exactly one row.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pushgate.db.schema import (
    flight_built,
    flight_revisions,
    flights,
    gate_cycles,
    gate_state,
    mail_queue,
    pushes,
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
        )
    )


def finish_push(conn: Connection, flight: int, status: str, output: str) -> None:
    conn.execute(
        update(pushes)
        .where(pushes.c.flight == flight)
        .values(status=status, output=output, finished=time.time())
    )


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


def get_gate(conn: Connection, branch: str) -> GateState:
    r = conn.execute(select(gate_state).where(gate_state.c.branch == branch)).first()
    if r is None:
        return GateState(branch)
    return GateState(branch, r.blocked_why, bool(r.force), r.force_revision)


def put_gate(conn: Connection, state: GateState) -> None:
    values = {
        "blocked_why": state.blocked_why,
        "force": state.force,
        "force_revision": state.force_revision,
        "updated": time.time(),
    }
    done = conn.execute(
        update(gate_state).where(gate_state.c.branch == state.branch).values(**values)
    )
    if done.rowcount == 0:
        conn.execute(insert(gate_state).values(branch=state.branch, **values))


# --- mail queue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailRow:
    id: int
    message_id: str
    kind: str
    flight: int | None
    recipients: list[str]
    message: str
    status: str
    attempts: int
    next_attempt: float
    last_error: str | None
    sent: float | None


def _mail(r: Any) -> MailRow:
    return MailRow(
        r.id,
        r.message_id,
        r.kind,
        r.flight,
        [a for a in r.recipients.split("\n") if a],
        r.message,
        r.status,
        r.attempts,
        r.next_attempt,
        r.last_error,
        r.sent,
    )


def enqueue_mail(
    conn: Connection,
    *,
    message_id: str,
    kind: str,
    flight: int | None,
    recipients: list[str],
    message: str,
    now: float,
) -> bool:
    """Queue a message once: False if one with this Message-ID was already queued."""
    values = dict(
        message_id=message_id,
        kind=kind,
        flight=flight,
        recipients="\n".join(recipients),
        message=message,
        status="queued",
        attempts=0,
        next_attempt=now,
        created=now,
    )
    if conn.dialect.name == "postgresql":
        stmt: Any = (
            postgresql.insert(mail_queue)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["message_id"])
        )
    else:
        stmt = (
            sqlite.insert(mail_queue)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["message_id"])
        )
    return bool(conn.execute(stmt).rowcount)


def get_mail(conn: Connection, message_id: str) -> MailRow | None:
    r = conn.execute(select(mail_queue).where(mail_queue.c.message_id == message_id)).first()
    return _mail(r) if r else None


def due_mail(conn: Connection, now: float, limit: int = 50) -> list[MailRow]:
    q = (
        select(mail_queue)
        .where(mail_queue.c.status == "queued", mail_queue.c.next_attempt <= now)
        .order_by(mail_queue.c.next_attempt, mail_queue.c.id)
        .limit(limit)
    )
    return [_mail(r) for r in conn.execute(q)]


def claim_mail(conn: Connection, mail_id: int, now: float, hold_s: float) -> bool:
    """Take a due message for `hold_s` seconds (another sender skips it meanwhile; a sender
    that dies lets it fall due again)."""
    res = conn.execute(
        update(mail_queue)
        .where(
            mail_queue.c.id == mail_id,
            mail_queue.c.status == "queued",
            mail_queue.c.next_attempt <= now,
        )
        .values(next_attempt=now + hold_s)
    )
    return res.rowcount == 1


def mark_sent(conn: Connection, mail_id: int, now: float) -> None:
    conn.execute(
        update(mail_queue)
        .where(mail_queue.c.id == mail_id)
        .values(status="sent", sent=now, attempts=mail_queue.c.attempts + 1, last_error=None)
    )


def mark_failed(
    conn: Connection,
    mail_id: int,
    *,
    error: str,
    permanent: bool,
    next_attempt: float,
    recipients: list[str] | None,
) -> None:
    values: dict[str, Any] = {
        "attempts": mail_queue.c.attempts + 1,
        "last_error": error,
        "next_attempt": next_attempt,
    }
    if permanent:
        values["status"] = "failed"
    if recipients:
        values["recipients"] = "\n".join(recipients)
    conn.execute(update(mail_queue).where(mail_queue.c.id == mail_id).values(**values))


def mail_counts(conn: Connection) -> dict[str, int]:
    q = select(mail_queue.c.status, func.count()).group_by(mail_queue.c.status)
    return {s: int(n) for s, n in conn.execute(q)}


def list_mail(conn: Connection, flight: int | None = None) -> list[MailRow]:
    q = select(mail_queue).order_by(mail_queue.c.id)
    if flight is not None:
        q = q.where(and_(mail_queue.c.flight == flight))
    return [_mail(r) for r in conn.execute(q)]


def next_mail_due(conn: Connection) -> float | None:
    q = select(func.min(mail_queue.c.next_attempt)).where(mail_queue.c.status == "queued")
    v = conn.execute(q).scalar()
    return float(v) if v is not None else None


# --- PostgreSQL advisory locks -----------------------------------------------------------------


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def pg_lock(conn: Connection, key: int, *, wait: bool) -> bool:
    """Session-level advisory lock on this connection (released when it closes)."""
    if wait:
        conn.exec_driver_sql("SELECT pg_advisory_lock(%(k)s)", {"k": key})
        return True
    got = conn.exec_driver_sql("SELECT pg_try_advisory_lock(%(k)s)", {"k": key}).scalar()
    return bool(got)


def pg_unlock(conn: Connection, key: int) -> None:
    conn.exec_driver_sql("SELECT pg_advisory_unlock(%(k)s)", {"k": key})
