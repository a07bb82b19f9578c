"""Faults are states, not tracebacks (issue 12, item 5): a new database first used by
several processes at once, a full logs disk, and every PostgreSQL connection of pushgate
dropped in the middle of a flight."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pushgate.db import flights as dbf
from pushgate.db.engine import SCHEMA_HEAD, Database
from pushgate.errors import EXIT_INTERRUPTED
from tests.conftest import PG_URL
from tests.gateproject import kill_group, make_gate_project, wait_for

# Processes that open one new database at the same moment (after a barrier time).
_OPEN_DB = """
import sys, time
from pushgate.db.engine import open_db
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
db = open_db(sys.argv[1])
print(db.schema_version())
"""


def test_new_database_first_used_by_several_processes_at_once(db_url: str) -> None:
    """Migrations run under a lock: every process gets the schema, none fails with
    'database is locked' (SQLite) or DuplicateTable (PostgreSQL)."""
    start = time.time() + 2.0  # the interpreters' start-up is over by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_DB, db_url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert out.strip() == SCHEMA_HEAD


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_every_postgresql_connection_dropped_mid_flight(db_url: str, tmp_path: Path) -> None:
    """pg_terminate_backend of every connection of a `branch run` while a step runs: the
    runner reconnects and the flight completes; the branch lock, gone with its session,
    is noticed before the push, so the cycle stops (exit 130, one line, no traceback) and
    the next run resumes it and pushes, once."""
    app = "pushgate_fault_" + uuid.uuid4().hex[:8]
    url = f"{db_url}&application_name={app}"
    p = make_gate_project(tmp_path / "p", db_url=url)
    target = p.commit("hello")
    p.flag("slow", content="3")
    log = tmp_path / "run1.log"
    proc = p.spawn("branch", "run", "app", log=log)
    try:
        wait_for(lambda: (p.ctrl / "slow-started").exists(), 60, "the slow step to start")
        admin = create_engine(PG_URL)
        try:
            with admin.begin() as c:
                killed = c.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = :app"
                    ),
                    {"app": app},
                ).scalar()
        finally:
            admin.dispose()
        assert killed and killed >= 2  # the branch lock's and the runner's at least
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    out = log.read_text()
    assert "Traceback" not in out and "internal error" not in out, out
    assert rc == EXIT_INTERRUPTED, out
    assert "lock 'branch-app' lost" in out, out
    assert p.tested() is None  # nothing pushed under a lost lock
    db = Database(db_url)
    try:
        with db.read() as conn:
            jobs = {j.job: j.status for j in dbf.get_jobs(conn, 1)}
        assert jobs and set(jobs.values()) == {"pass"}, jobs  # the flight completed

        r = p.cli("branch", "run", "app")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "push: pushed" in r.stdout
        assert p.tested() == target
        with db.read() as conn:
            rows = conn.execute(text("SELECT flight, status FROM pushes")).all()
            flights = conn.execute(text("SELECT count(*) FROM flights")).scalar()
        assert [tuple(r) for r in rows] == [(1, "pushed")] and flights == 1
    finally:
        db.dispose()
