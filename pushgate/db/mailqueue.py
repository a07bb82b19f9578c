"""Queries of the mail queue: one row per message (unique Message-ID), claimed,
sent or failed with its last error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pushgate.db.schema import (
    mail_queue,
)

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


def requeue_failed(conn: Connection, mail_id: int, now: float) -> bool:
    """Queue a message that failed for good again, due now (its last error kept until it
    is sent); False if it is not `failed` (sent, queued, or absent)."""
    res = conn.execute(
        update(mail_queue)
        .where(mail_queue.c.id == mail_id, mail_queue.c.status == "failed")
        .values(status="queued", next_attempt=now)
    )
    return res.rowcount == 1


def get_mail_by_id(conn: Connection, mail_id: int) -> MailRow | None:
    r = conn.execute(select(mail_queue).where(mail_queue.c.id == mail_id)).first()
    return _mail(r) if r else None


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
