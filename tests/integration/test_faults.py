"""Faults are states, not tracebacks (issue 12, item 5): a new database first used by
several processes at once, a full logs disk, and every PostgreSQL connection of pushgate
dropped in the middle of a flight."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pushgate.db import flights as dbf
from pushgate.db.engine import SCHEMA_HEAD, Database
from pushgate.errors import EXIT_BROKEN, EXIT_INTERRUPTED
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


# A test job whose step writes 600 kB of output while <ctrl>/noisy exists; it needs no
# build, so it runs second, before the other tests (one slot).
NOISY = """
[jobs.test-noisy]
[[jobs.test-noisy.steps]]
testid = "noisy"
command = '''if [ -e CTRL/noisy ]; then head -c 600000 /dev/zero | tr '\\\\0' x | fold -w 99; fi'''
"""


@pytest.fixture
def small_logs_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, to be the logs dir."""
    d = tmp_path / "logs"
    d.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {r.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_full_logs_disk_breaks_the_step_and_the_flight_resumes(
    tmp_path: Path, small_logs_disk: Path
) -> None:
    """A step whose log cannot be written is `broken` with the reason, said in one line on
    the terminal, no traceback; the runner stops taking jobs (the others stay queued) and,
    once space is freed, the flight resumes and the gate goes on to push."""
    logs = small_logs_disk
    p = make_gate_project(tmp_path / "p", extra=NOISY.replace("CTRL", str(tmp_path / "p/ctrl")))
    text_ = p.cfg_path.read_text().replace('dir = "state"', f'dir = "state"\nlogs = "{logs}"')
    p.cfg_path.write_text(text_)
    # All but 256 kB of the disk taken.
    with open(logs / "filler", "wb") as f:
        f.write(b"\0" * (2048 - 256) * 1024)
    p.flag("noisy")
    target = p.commit("hello")

    r = p.cli("branch", "run", "app")
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    assert r.returncode == EXIT_INTERRUPTED, out
    said = [line for line in r.stderr.splitlines() if "space" in line]
    assert len(said) == 1 and "no space left for the step's log" in said[0], r.stderr
    db = Database(p.load().database_url)
    try:
        with db.read() as conn:
            steps = {
                (row.job, row.testid): (row.status, row.reason)
                for row in conn.execute(text("SELECT * FROM steps WHERE flight = 1"))
            }
            jobs = {j.job: j.status for j in dbf.get_jobs(conn, 1)}
        status, reason = steps[("test-noisy", "noisy")]
        assert status == "broken" and reason.startswith("no space left for the step's log")
        assert jobs["build"] == "pass" and jobs["test-noisy"] == "broken"
        # The runner stopped cleanly: nothing else was tried on the full disk.
        assert {jobs[j] for j in jobs if j not in ("build", "test-noisy")} == {"queued"}, jobs

        (logs / "filler").unlink()
        r = p.cli("branch", "run", "app")
        assert r.returncode == EXIT_BROKEN, r.stdout + r.stderr  # flight 1 resumed, finished
        with db.read() as conn:
            jobs = {j.job: j.status for j in dbf.get_jobs(conn, 1)}
        assert sorted(jobs.values()) == ["broken"] + ["pass"] * 5, jobs
        # The broken step does not block for good: the next cycle tests again and pushes.
        r = p.cli("branch", "run", "app")
        assert r.returncode == 0 and "push: pushed" in r.stdout, r.stdout + r.stderr
        assert p.tested() == target
    finally:
        db.dispose()
