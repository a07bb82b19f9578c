"""Flight, job and step queries on SQLite and PostgreSQL."""

from __future__ import annotations

from pushgate.db import flights as dbf
from pushgate.db import hosts as dbh
from pushgate.db.engine import Database


def _flight(db: Database, bless_as: str = "real", parent: int | None = None) -> int:
    with db.write() as conn:
        return dbf.create_flight(
            conn,
            branch="b",
            intended="real",
            bless_as=bless_as,
            revisions={"t": ("a" * 40, "/repo", "b" * 40)},
            new_jobs=[
                dbf.NewJob("build", {"x": "1"}, {}),
                dbf.NewJob("test", {}, {"buildjob": (None, "build")}),
            ],
            parent_flight=parent,
        )


def test_create_and_read_back(db: Database) -> None:
    f = _flight(db)
    with db.read() as conn:
        info = dbf.get_flight(conn, f)
        jobs = dbf.get_jobs(conn, f)
        deps = dbf.job_deps_of(conn, f)
        bases = dbf.flight_baselines(conn, f)
    assert (
        info is not None and info.blessing == "constructing" and info.revisions == {"t": "a" * 40}
    )
    assert [j.job for j in jobs] == ["build", "test"] and jobs[0].runvars == {"x": "1"}
    assert jobs[1].runvars == {"buildjob": "build"}  # the reference is also a runvar
    assert deps == {"test": [("buildjob", f, "build")]}
    assert bases == {"t": "b" * 40}


def test_a_retest_is_reported_with_its_parent(db: Database) -> None:
    f = _flight(db)
    r = _flight(db, "real-retest", parent=f)
    b = _flight(db, "real-bisect", parent=f)
    with db.read() as conn:
        assert dbf.reported_in(conn, r) == f
        assert dbf.reported_in(conn, b) == b  # a bisection flight is its own
        assert dbf.reported_in(conn, f) == f


def test_claim_unclaim_and_finish_once(db: Database) -> None:
    f = _flight(db)
    with db.write() as conn:
        dbh.sync_hosts(conn, {"h": ("local", 1, [])})
        assert dbf.claim_job(conn, f, "build", "r1", 1e12)
        assert not dbf.claim_job(conn, f, "build", "r2", 1e12)  # already claimed
        claim = dbh.claim_slot(conn, ["h"], f, "build", "r1", 1e12)
        assert claim is not None
        assert dbh.claim_slot(conn, ["h"], f, "test", "r1", 1e12) is None  # one slot only
        assert dbf.claim_job(conn, f, "test", "r1", 1e12)
        dbf.unclaim_job(conn, f, "test", "r1")
    with db.read() as conn:
        assert {j.job: j.status for j in dbf.get_jobs(conn, f)} == {
            "build": "preparing",
            "test": "queued",
        }
    with db.write() as conn:
        dbf.set_job_status(conn, f, "build", "pass", final=True)
        dbh.release_slot(conn, claim, f, "build")
        assert not dbf.finish_flight_if_done(conn, f)  # test is still queued
        dbf.set_job_status(conn, f, "test", "blocked", final=True)
        assert dbf.finish_flight_if_done(conn, f)
        assert not dbf.finish_flight_if_done(conn, f)  # only the first caller blesses it
    with db.read() as conn:
        info = dbf.get_flight(conn, f)
        assert dbh.held_slots(conn) == []
    assert info is not None and info.blessing == "real" and info.finished


def test_broken_sticks(db: Database) -> None:
    f = _flight(db)
    with db.write() as conn:
        dbf.set_job_status(conn, f, "build", "broken", final=True)
        dbf.set_job_status(conn, f, "build", "pass", final=True)
    with db.read() as conn:
        assert dbf.get_jobs(conn, f)[0].status == "broken"
