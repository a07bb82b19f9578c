"""Queries of stored verdicts: one row per judged flight and its non-pass steps.

A verdict is inserted once (the flight is its primary key); a second insert of the same
flight is ignored, so two processes judging one flight at once leave the first verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from pushgate.db.schema import verdict_failures, verdicts


@dataclass(frozen=True)
class VerdictRow:
    flight: int
    branch: str
    created: float
    outcome: str
    subject_prefix: str
    verdict: str
    blocking: bool
    mode: str
    retest_flight: int | None
    doc: str


@dataclass(frozen=True)
class FailureRow:
    flight: int
    seq: int
    job: str
    stepno: int | None
    testid: str
    status: str
    kind: str
    in_flight: int | None
    reference_flight: int | None
    passed_in: int | None
    blocks: bool
    annotation: str


def insert_verdict(conn: Connection, row: VerdictRow, failures: Sequence[FailureRow]) -> bool:
    """Store a verdict; False (and nothing written) if the flight has one already."""
    if conn.execute(select(verdicts.c.flight).where(verdicts.c.flight == row.flight)).first():
        return False
    conn.execute(insert(verdicts).values(**row.__dict__))
    if failures:
        conn.execute(insert(verdict_failures), [f.__dict__ for f in failures])
    return True


def get_verdict(conn: Connection, flight: int) -> VerdictRow | None:
    r = conn.execute(select(verdicts).where(verdicts.c.flight == flight)).first()
    if r is None:
        return None
    m = r._mapping
    return VerdictRow(**{k: m[k] for k in VerdictRow.__dataclass_fields__})


def failures_of(conn: Connection, flight: int) -> list[FailureRow]:
    q = (
        select(verdict_failures)
        .where(verdict_failures.c.flight == flight)
        .order_by(verdict_failures.c.seq)
    )
    return [
        FailureRow(**{k: r._mapping[k] for k in FailureRow.__dataclass_fields__})
        for r in conn.execute(q)
    ]


def failures_of_step(
    conn: Connection, job: str, testid: str, limit: int = 1000
) -> list[FailureRow]:
    """The stored classes of one (job, testid) over history, newest first (statistics)."""
    q = (
        select(verdict_failures)
        .where(verdict_failures.c.job == job, verdict_failures.c.testid == testid)
        .order_by(verdict_failures.c.flight.desc())
        .limit(limit)
    )
    return [
        FailureRow(**{k: r._mapping[k] for k in FailureRow.__dataclass_fields__})
        for r in conn.execute(q)
    ]
