"""Retention (`pushgate gc`) over a real flight history: passing and failing jobs, a pushed
flight, a running bisection with a probe that reuses an old build, a running job, and
hostile links and names. gc deletes exactly what the rules say, --dry-run nothing."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from pushgate import paths
from pushgate.config import Loaded
from pushgate.daemon.retention import DAY_S, daily_gc, run_gc
from pushgate.db import bisections as dbb
from pushgate.db import flights as dbf
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.db.schema import jobs as jobs_table
from pushgate.publish.report import write_flight_html
from pushgate.run.plan import create_planned, new_flight, plan_flight
from pushgate.run.scheduler import run_flight
from tests.flightkit import Project, make_project

JOBS = {
    "build-x": {
        "artifacts": ["out"],
        "steps": [
            {
                "testid": "build",
                "command": "mkdir out && head -c 65536 /dev/zero > out/blob && echo w > scratch",
            }
        ],
    },
    "test-ok": {
        "buildjob": "build-x",
        "artifacts": ["res"],
        "steps": [{"testid": "run", "command": "mkdir res && echo ok > res/r"}],
    },
    "test-bad": {
        "buildjob": "build-x",
        "steps": [{"testid": "run", "command": "echo left > here; exit 1"}],
    },
}
RETENTION = {"keep_days": 5, "keep_flights": 2, "failed_work_days": 3, "interval_h": 24}


@dataclasses.dataclass
class History:
    loaded: Loaded
    db: Database
    outside: Path
    running: int


def _tree(*roots: Path) -> dict[str, int]:
    """Every path below the roots (links not followed) with its size."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                p = Path(dirpath, n)
                out[str(p)] = p.lstat().st_size
    return out


def _dirs(loaded: Loaded, kind: str) -> set[str]:
    """`flight/job` (or `flight` for logs) of what is on disk below a root (a job's work
    dir is one attempt's, `job@N`)."""
    root = paths.flight_roots(loaded)[kind]
    if kind == "logs":
        return {p.name for p in root.iterdir() if p.name.isdigit()}
    return {f"{p.parent.name}/{paths.job_of_dir(p.name)}" for p in root.glob("*/*")}


def _flights(flights: range | list[int], jobs: list[str]) -> set[str]:
    return {f"{f}/{j}" for f in flights for j in jobs}


@pytest.fixture
def history(tmp_path: Path, db_url: str) -> History:
    """Flights 1-7 (real), 8 (a probe of a running bisection, reusing flight 1's build),
    9 (running: one job mid-step); flight 2 pushed; the bisection's basis 3, latest 4."""
    project: Project = make_project(tmp_path, db_url)
    loaded, db = project.load(JOBS, extra={"retention": RETENTION})
    for _ in range(7):
        run_flight(db, loaded, new_flight(db, loaded, "b"))
    plan = plan_flight(loaded, "b", blessing="real-bisect", jobs="test-bad")
    probe = [
        dbf.NewJob(j.job, j.runvars, {"buildjob": (1, "build-x")})
        for j in plan.jobs
        if j.job == "test-bad"
    ]
    f8 = create_planned(db, dataclasses.replace(plan, jobs=probe))
    assert f8 == 8
    run_flight(db, loaded, f8)
    running = new_flight(db, loaded, "b")
    with db.write() as conn:
        info = dbf.get_flight(conn, 2)
        assert info is not None
        dbp.insert_push(
            conn,
            flight=2,
            branch="b",
            tree="src",
            revision=info.revisions["src"],
            expected_old=None,
            status="pushed",
        )
        dbb.create_bisection(
            conn,
            branch="b",
            job="test-bad",
            testid="run",
            basis=info.revisions,
            latest=info.revisions,
            basis_flight=3,
            latest_flight=4,
            host="localhost",
            start_flight=7,
        )
        dbf.set_flight_running(conn, running)
        dbf.set_job_status(conn, running, "build-x", "running")
        # An end time left by an earlier attempt does not make a running job finished.
        conn.execute(
            update(jobs_table)
            .where(jobs_table.c.flight == running, jobs_table.c.job == "build-x")
            .values(finished=1.0)
        )
        # A hostile name in the database, naming state/outside: never made into a path.
        conn.execute(
            insert(jobs_table).values(
                flight=running, job="../../outside", status="pass", ordinal=9, finished=1.0
            )
        )
    for d in (
        paths.job_workdir(loaded, running, "build-x"),
        Path(paths.job_log_dir(loaded, running, "build-x")),
    ):
        d.mkdir(parents=True)
        (d / "busy").write_text("mid-step\n")
    # Hostile links: into a passed job's work dir, a logs dir that goes, and a job dir that
    # is itself a link; a read-only dir a job left.
    outside = tmp_path / "outside"
    (loaded.state_dir / "outside").mkdir()
    (loaded.state_dir / "outside" / "victim").write_text("keep me\n")
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "precious").write_text("keep me\n")
    (outside / "file").write_text("keep me too\n")
    w1 = paths.job_workdir(loaded, 1, "build-x", 1)  # flight 1 ran it: its first attempt
    (w1 / "to-dir").symlink_to(outside / "dir")
    (w1 / "to-file").symlink_to(outside / "file")
    (w1 / "ro" / "deep").mkdir(parents=True)
    (w1 / "ro" / "deep" / "f").write_text("x")
    os.chmod(w1 / "ro" / "deep", 0o500)
    os.chmod(w1 / "ro", 0o500)
    (Path(paths.job_log_dir(loaded, 6, "test-ok")) / "evil").symlink_to(outside / "dir")
    w3 = paths.job_workdir(loaded, 3, "test-ok", 1)
    shutil.rmtree(w3)
    w3.symlink_to(outside / "dir")
    return History(loaded, db, outside, running)


def test_gc_deletes_exactly_what_retention_says(history: History) -> None:
    loaded, db = history.loaded, history.db
    roots = list(paths.flight_roots(loaded).values()) + [history.outside]
    outside = _tree(history.outside)
    all_flights = range(1, 8)
    assert _dirs(loaded, "work") == _flights(all_flights, list(JOBS)) | {
        "8/test-bad",
        "9/build-x",
    }

    # Now: the work dirs of passed jobs go; failed ones stay 3 days; nothing else goes.
    before = _tree(*roots)
    dry = run_gc(db, loaded, dry_run=True)
    assert _tree(*roots) == before  # a dry run deletes nothing
    res = run_gc(db, loaded)
    assert sorted(d.label() for d in res.items) == sorted(d.label() for d in dry.items)
    assert [d.bytes for d in res.items] == [d.bytes for d in dry.items]
    assert res.total() >= 7 * 65536 and not res.errors
    assert _dirs(loaded, "work") == _flights(range(1, 9), ["test-bad"]) | {"9/build-x"}
    assert {d.kind for d in res.items} == {"work"}
    assert _tree(history.outside) == outside  # no link was followed

    # Ten days on: failed work dirs go too; logs and artifacts past keep_days go unless
    # among the last 2 flights (8, 9), pushed (2), the bisection's (3, 4, probe 8) or a
    # build it uses (1 via probe 8) or may reuse (build-x passed since flight 3).
    later = time.time() + 10 * DAY_S
    before = _tree(*roots)
    dry = run_gc(db, loaded, dry_run=True, now=later)
    assert _tree(*roots) == before
    res = run_gc(db, loaded, now=later)
    assert sorted(d.label() for d in res.items) == sorted(d.label() for d in dry.items)
    assert _dirs(loaded, "work") == {"9/build-x"}  # the running job's
    assert _dirs(loaded, "logs") == {"2", "3", "4", "8", "9"}
    # (Every job that ran has an artifacts dir, if only an empty one.)
    assert _dirs(loaded, "artifacts") == _flights(range(1, 8), ["build-x"]) | _flights(
        [2, 3, 4], ["test-ok", "test-bad"]
    ) | {"8/test-bad"}
    assert (paths.job_workdir(loaded, history.running, "build-x") / "busy").is_file()
    assert _tree(history.outside) == outside

    # The bisection ends: its flights and reusable builds are no longer kept.
    with db.write() as conn:
        (row,) = dbb.running(conn)
        dbb.finish_bisection(
            conn,
            row.id,
            status="complete",
            culprit_tree=None,
            culprit_commit=None,
            confidence=1.0,
            runs=0,
            reason="",
        )
    run_gc(db, loaded, now=later)
    assert _dirs(loaded, "logs") == {"2", "8", "9"}
    assert _dirs(loaded, "artifacts") == _flights([2], list(JOBS)) | {"1/build-x", "8/test-bad"}
    assert not run_gc(db, loaded, now=later).items  # nothing left to do
    assert (loaded.state_dir / "outside" / "victim").is_file()
    assert _tree(history.outside) == outside

    # Every deletion is in the journal; pages link no log that is gone.
    journal = paths.gc_journal(loaded).read_text()
    assert "deleted logs 1 " in journal and "deleted work 1 build-x@1 " in journal
    html = history.outside.parent / "html"
    page = "".join(p.read_text() for p in write_flight_html(db, loaded, 1, html / "1"))
    assert ".log" not in page
    page = "".join(p.read_text() for p in write_flight_html(db, loaded, 2, html / "2"))
    assert "build-x/2.build.log" in page or "build-x/1.build.log" in page


def test_gc_cli_dry_run_then_gc(tmp_path: Path) -> None:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/state/pushgate.db")
    cfg = project.config(JOBS, extra={"retention": RETENTION})

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pushgate.cli", "-c", str(cfg), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    n = pg("flight", "new", "b").stdout.strip()
    assert pg("flight", "run", "-q", n).returncode == 1  # test-bad failed
    work = tmp_path / "state" / "work" / n
    r = pg("gc", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"work {n} build-x@1: " in r.stdout and "(job passed)" in r.stdout
    assert "would delete" in r.stdout.splitlines()[-1]
    assert sorted(p.name for p in work.iterdir()) == ["build-x@1", "test-bad@1", "test-ok@1"]
    r = pg("gc")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("deleted ") and "work 2 dirs" in r.stdout
    assert sorted(p.name for p in work.iterdir()) == ["test-bad@1"]


def test_daemon_runs_gc_at_start_then_every_interval(tmp_path: Path) -> None:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/state/pushgate.db")
    loaded, db = project.load(JOBS, extra={"retention": RETENTION})
    f = new_flight(db, loaded, "b")
    run_flight(db, loaded, f)
    now = time.time()
    due = daily_gc(db, loaded, 0.0, now=now)
    assert due == now + 24 * 3600
    assert _dirs(loaded, "work") == {f"{f}/test-bad"}
    g = new_flight(db, loaded, "b")
    run_flight(db, loaded, g)
    assert daily_gc(db, loaded, due, now=now + 3600) == due  # not due: nothing done
    assert f"{g}/build-x" in _dirs(loaded, "work")
    assert daily_gc(db, loaded, due, now=due) == due + 24 * 3600
    assert _dirs(loaded, "work") == {f"{f}/test-bad", f"{g}/test-bad"}
