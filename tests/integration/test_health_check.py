"""The health check before a host is used again (runner.health_check_job): a host that went
bad, or whose worker was reaped, takes no job but the health-check job, which is queued for
it automatically; passing makes it good and its jobs run, failing leaves it bad (and the
jobs that need it starve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pushgate.db import flights as dbf
from pushgate.db import hosthealth
from pushgate.db import hosts as dbh
from pushgate.db.engine import Database
from pushgate.model import Status
from pushgate.run.plan import new_flight
from pushgate.run.scheduler import run_flight, sync_config_hosts
from pushgate.run.worker import run_worker
from tests.flightkit import Project, make_project


def _farm(tmp: Path, db_url: str, starve: float = 60.0) -> tuple[Project, Any, Database]:
    project = make_project(tmp, db_url)
    ok = project.ctl / "ok"
    jobs = {
        # The health check passes while ctl/ok exists.
        "hc": {
            "trees": [],
            "hostflags": ["x"],
            "steps": [{"testid": "c", "command": f"test -e {ok}"}],
        },
        "j": {"trees": [], "hostflags": ["x"], "steps": [{"testid": "t", "command": "true"}]},
    }
    runner = {"heartbeat_s": 0.2, "lease_s": 3, "isolation": "none"}
    runner.update(health_check_job="hc", starve_after_s=starve)
    extra = {"hosts": {"h1": {"slots": 1, "flags": ["x"]}}, "runner": runner}
    loaded, db = project.load(jobs, branch_jobs=["j"], extra=extra)
    sync_config_hosts(db, loaded)
    return project, loaded, db


def _bad(db: Database) -> None:
    with db.write() as conn:
        assert hosthealth.record_break(
            conn, "h1", 0, "x", 0, "test", "me", bad_after=3, bad_now=True
        )


def _health(db: Database) -> tuple[str, str | None]:
    with db.read() as conn:
        h = next(h for h in dbh.list_hosts(conn) if h.host == "h1")
    return h.health, h.health_why


def _allocs(db: Database) -> list[tuple[int, str]]:
    with db.read() as conn:
        return [(a.flight, a.job) for a in reversed(dbh.allocations(conn, "h1"))]


def _check_flights(db: Database) -> list[int]:
    with db.read() as conn:
        return [f.flight for f in dbf.list_flights(conn) if f.intended == "health-check"]


def test_bad_host_is_checked_then_used(tmp_path: Path, db_url: str) -> None:
    project, loaded, db = _farm(tmp_path, db_url)
    (project.ctl / "ok").touch()
    _bad(db)
    flight = new_flight(db, loaded, "b")
    statuses, _ = run_flight(db, loaded, flight)
    assert statuses == {"j": Status.PASS}
    assert _health(db) == ("good", "health-check job hc passed")
    [check] = _check_flights(db)
    # The check ran on the bad host first, then the flight's job.
    assert _allocs(db) == [(check, "hc"), (flight, "j")]
    with db.read() as conn:
        [hc] = dbf.get_jobs(conn, check)
    assert (hc.status, hc.runvars["check_host"], hc.runvars["host"]) == ("pass", "h1", "h1")


def test_failed_check_leaves_host_bad(tmp_path: Path, db_url: str) -> None:
    _, loaded, db = _farm(tmp_path, db_url, starve=1.0)
    _bad(db)
    flight = new_flight(db, loaded, "b")
    statuses, _ = run_flight(db, loaded, flight)
    assert statuses == {"j": Status.STARVED}
    [check] = _check_flights(db)
    health, why = _health(db)
    assert (health, why) == ("bad", f"health-check flight {check}: fail, not pass")
    assert _allocs(db) == [(check, "hc")]  # never given to j
    # No second check until a person asks for one (set-health unknown).
    run_flight(db, loaded, new_flight(db, loaded, "b"))
    assert len(_check_flights(db)) == 1


def test_reaped_host_is_checked_by_a_worker(tmp_path: Path, db_url: str) -> None:
    project, loaded, db = _farm(tmp_path, db_url)
    (project.ctl / "ok").touch()
    with db.write() as conn:
        dbh.set_health(conn, "h1", "good", "fine", "me")
        # Its worker vanished while it ran a job: unknown, and checked before reuse.
        dbh.needs_check(conn, "h1", "runner x died", "me", check=True)
    assert _health(db) == ("unknown", "runner x died")
    flight = new_flight(db, loaded, "b")
    run_worker(db, loaded, once=True)
    [check] = _check_flights(db)
    assert _allocs(db) == [(check, "hc"), (flight, "j")]
    assert _health(db)[0] == "good"
    with db.read() as conn:
        assert {j.job: j.status for j in dbf.get_jobs(conn, flight)} == {"j": "pass"}
