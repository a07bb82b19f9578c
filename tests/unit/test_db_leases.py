"""Fenced leases at the query level (invariant 8), on SQLite and PostgreSQL: once a job is
taken over, every write its old attempt makes is refused and changes nothing."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from pushgate.db import flights as dbf
from pushgate.db import hosts as dbh
from pushgate.db.engine import Database
from pushgate.db.schema import host_allocations, jobs
from tests.unit.test_db_flights import _flight


def test_a_taken_over_attempt_cannot_write(db: Database) -> None:
    f = _flight(db)
    now = time.time()
    with db.write() as conn:
        dbh.sync_hosts(conn, {"h": ("local", 1, [])})
        old = dbf.claim_job(conn, f, "build", "r1", now + 30)
        assert old is not None
        claim = dbh.claim_slot(conn, ["h"], f, "build", "r1", now + 30, attempt=old)
        assert claim is not None and claim.attempt == old
        dbf.set_job_status(conn, f, "build", "running", attempt=old)
        dbf.start_step(conn, f, "build", 1, "compile", True, None, attempt=old)
    # r1's lease runs out; r2 takes the job over, requeues it, claims it again.
    with db.read() as conn:
        [stale] = dbf.stale_jobs(conn, f, now + 60, set())
    assert stale.attempt == old
    with db.write() as conn:
        taker = dbf.take_over(conn, stale, "r2", now + 90, now + 60)
        assert taker is not None and taker != old
        assert dbf.take_over(conn, stale, "r3", now + 90, now + 60) is None  # once only
        dbh.release_job_slots(conn, f, "build", stale.attempt)
        assert dbf.requeue_job(conn, f, "build", taker)
        new = dbf.claim_job(conn, f, "build", "r2", now + 90)
        assert new is not None and new not in (old, taker)
        new_claim = dbh.claim_slot(conn, ["h"], f, "build", "r2", now + 90, attempt=new)
        assert new_claim == claim.__class__("h", 0, new)  # the same one slot
        dbf.set_job_status(conn, f, "build", "running", attempt=new)
        dbf.start_step(conn, f, "build", 1, "compile", True, None, attempt=new)

    # Every write of the old attempt is refused; nothing of it lands.
    refused = [
        lambda c: dbf.set_job_status(c, f, "build", "fail", final=True, attempt=old),
        lambda c: dbf.set_job_status(c, f, "build", "running", attempt=old),
        lambda c: dbf.start_step(c, f, "build", 2, "more", True, None, attempt=old),
        lambda c: dbf.finish_step(c, f, "build", 1, "fail", "stale", attempt=old),
    ]
    for write in refused:
        with pytest.raises(dbf.LeaseLost), db.write() as conn:
            write(conn)
    with db.write() as conn:
        assert not dbf.renew_lease(conn, f, "build", old, now + 500)
        assert not dbh.renew_slot(conn, claim, f, "build", now + 500)
        assert not dbh.release_slot(conn, claim, f, "build")  # not the new attempt's slot
        assert not dbf.requeue_job(conn, f, "build", old)
        assert not dbf.break_job(conn, f, "build", "stale", old)
        dbh.release_job_slots(conn, f, "build", old)

    with db.read() as conn:
        job = conn.execute(select(jobs).where(jobs.c.flight == f, jobs.c.job == "build")).one()
        steps = dbf.get_steps(conn, f, "build")
        held = dbh.held_slots(conn)
        allocs = conn.execute(select(host_allocations).order_by(host_allocations.c.id)).all()
    assert (job.status, job.attempt, job.runner) == ("running", new, "r2")
    assert [(s.stepno, s.status) for s in steps] == [(1, "running")]
    assert held == [("h", 0, f, "build")]
    assert [(a.attempt, a.released is None) for a in allocs] == [(old, False), (new, True)]

    # The new attempt's own writes go through.
    with db.write() as conn:
        dbf.finish_step(conn, f, "build", 1, "pass", attempt=new)
        dbf.set_job_status(conn, f, "build", "pass", final=True, attempt=new)
        assert dbh.release_slot(conn, new_claim, f, "build")
    with db.read() as conn:
        assert dbf.job_statuses(conn, [(f, "build")]) == {(f, "build"): "pass"}
        assert dbh.held_slots(conn) == []


def test_a_queued_job_is_settled_once(db: Database) -> None:
    f = _flight(db)
    with db.write() as conn:
        assert dbf.settle_queued_job(conn, f, "test", "blocked")
        assert not dbf.settle_queued_job(conn, f, "test", "starved")  # another runner's
        assert dbf.claim_job(conn, f, "test", "r1", time.time() + 30) is None
    with db.read() as conn:
        assert dbf.job_statuses(conn, [(f, "test")]) == {(f, "test"): "blocked"}


def test_a_claim_skips_a_job_another_claim_has_locked(db: Database) -> None:
    """PostgreSQL: a worker does not wait for another worker's claim of the same job to
    commit (FOR UPDATE SKIP LOCKED): it gets None at once and goes on to other jobs."""
    if not db.url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL only")
    f = _flight(db)
    now = time.time()
    with db.write() as first:
        assert dbf.claim_job(first, f, "build", "r1", now + 30) is not None
        with db.write() as second:
            second.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            t0 = time.monotonic()
            assert dbf.claim_job(second, f, "build", "r2", now + 30) is None
            assert time.monotonic() - t0 < 1.0
    with db.read() as conn:
        runner = conn.execute(select(jobs.c.runner).where(jobs.c.job == "build")).scalar()
    assert runner == "r1"
