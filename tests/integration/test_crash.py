"""kill -9 of `pushgate flight run` in the middle of a step, then run it again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pushgate.db import flights as dbf
from pushgate.db.hosts import held_slots
from pushgate.run.plan import new_flight
from tests.flightkit import Project, make_project
from tests.procs import alive


def start_run(cfg: Path, flight: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pushgate.cli", "-c", str(cfg), "flight", "run", str(flight), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(path: Path, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Project:
    return make_project(tmp_path, db_url)


def test_kill_9_mid_step_then_resume(project: Project, tmp_path: Path) -> None:
    hang = tmp_path / "hanging.pid"
    again = tmp_path / "second-attempt"
    stale = tmp_path / "stale-files-seen"
    jobs = {
        "build": {"steps": [{"testid": "compile", "command": "true"}], "trees": []},
        "test": {
            "buildjob": "build",
            "trees": [],
            "steps": [
                # Leaves a file in the job's work and artifact dirs; notes if an
                # earlier attempt's files are still there (a rerun starts afresh).
                {
                    "testid": "quick",
                    "command": f"if [ -e mine ] || [ -e $PUSHGATE_ARTIFACTS/mine ]; then "
                    f"touch {stale}; fi; touch mine $PUSHGATE_ARTIFACTS/mine",
                },
                # First attempt: record our pid and hang; later attempts pass.
                {
                    "testid": "hang",
                    "command": f"if [ -f {hang} ]; then touch {again}; else "
                    f"echo $$ > {hang}; exec sleep 60; fi",
                },
                {"testid": "after", "command": "true"},
            ],
        },
    }
    # Unisolated, and the runner killed with its helper and the job's agent (as by the
    # OOM killer): the step is left behind, for the next run to find and kill. (Killed
    # alone, the runner's agents kill its steps: the next test.)
    extra = {"runner": {"heartbeat_s": 0.5, "lease_s": 3, "isolation": "none"}}
    cfg = project.config(jobs, extra=extra)
    loaded, db = project.load(jobs, extra=extra)
    flight = new_flight(db, loaded, "b")
    proc = start_run(cfg, flight)
    wait_for(hang)
    time.sleep(0.2)
    with db.read() as conn:
        before = {(s.job, s.stepno): s for s in dbf.get_steps(conn, flight)}
    assert before[("test", 3)].status == "running"
    for pid in helpers(proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    orphan = int(hang.read_text())
    assert alive(orphan)  # kill -9 of them all leaves the step's process behind

    proc = start_run(cfg, flight)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"requeued" in err
    assert again.exists()
    assert not stale.exists()  # the rerun's work and artifact dirs were made anew
    time.sleep(0.1)
    assert not alive(orphan)  # the new run killed the orphaned step
    with db.read() as conn:
        steps = {(s.job, s.stepno): s for s in dbf.get_steps(conn, flight)}
        jobs_ = {j.job: j.status for j in dbf.get_jobs(conn, flight)}
        info = dbf.get_flight(conn, flight)
        held = held_slots(conn)
    assert jobs_ == {"build": "pass", "test": "pass"}
    # The finished build job's step is kept as it was.
    assert steps[("build", 1)].started == before[("build", 1)].started
    # The interrupted job ran again from the start.
    assert [(k[1], s.testid, s.status) for k, s in sorted(steps.items()) if k[0] == "test"] == [
        (1, "build-check(1)", "pass"),
        (2, "quick", "pass"),
        (3, "hang", "pass"),
        (4, "after", "pass"),
    ]
    assert steps[("test", 2)].started > before[("test", 2)].started
    assert all(s.status != "running" for s in steps.values())
    assert info is not None and info.blessing == "real"
    assert held == []


def helpers(pid: int) -> list[int]:
    """The spawner helper and agents under a runner."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for child in map(int, f.read().split()):
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as c:
                        if b"spawner.py" in c.read():
                            out.append(child)
                except OSError:
                    continue
                out += helpers(child)
    return out


def step_pids(flight: int, job: str) -> list[int]:
    """The processes of a job's steps, found by their environment as kill_orphans does."""
    want = {f"PUSHGATE_FLIGHT={flight}".encode(), f"PUSHGATE_JOB={job}".encode()}
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if want <= set(f.read().split(b"\0")) and alive(int(entry)):
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_kill_9_of_the_runner_takes_its_steps_along(tmp_path: Path, isolation: str) -> None:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/pg.db")
    mark = project.ctl / "started"
    jobs = {"j": {"trees": [], "steps": [{"testid": "hang", "command": f"touch {mark}; sleep 60"}]}}
    extra = {"runner": {"isolation": isolation, "shared": [str(project.ctl)]}}
    cfg = project.config(jobs, extra=extra)
    loaded, db = project.load(jobs, extra=extra)
    flight = new_flight(db, loaded, "b")
    proc = start_run(cfg, flight)
    wait_for(mark)
    assert step_pids(flight, "j")  # the step's shell and its sleep
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The job's agent sees the runner's socket close: it kills the job's processes (in a
    # sandbox, it is the pid 1 whose end makes the kernel kill everything in it), with no
    # later run needed.
    deadline = time.monotonic() + 5
    while step_pids(flight, "j") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert step_pids(flight, "j") == []


def test_job_that_keeps_killing_its_runner_is_broken(tmp_path: Path) -> None:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/pg.db")
    mark = project.ctl / "started"
    jobs = {
        "j": {"trees": [], "steps": [{"testid": "hang", "command": f"touch {mark}; exec sleep 60"}]}
    }
    cfg = project.config(jobs)
    loaded, db = project.load(jobs)
    flight = new_flight(db, loaded, "b")
    for _ in range(3):
        mark.unlink(missing_ok=True)
        proc = start_run(cfg, flight)
        wait_for(mark)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start_run(cfg, flight)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err  # a broken flight (README: exit codes)
    assert b"broken after 3" in err
    with db.read() as conn:
        steps = dbf.get_steps(conn, flight)
        status = {j.job: j.status for j in dbf.get_jobs(conn, flight)}
    assert status == {"j": "broken"}
    assert [(s.testid, s.status) for s in steps] == [("hang", "broken")]


def test_sigterm_stops_after_the_current_step(tmp_path: Path) -> None:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/pg.db")
    mark = project.ctl / "in-step-1"
    jobs = {
        "j": {
            "trees": [],
            "steps": [
                {"testid": "one", "command": f"touch {mark}; sleep 1"},
                {"testid": "two", "command": "true"},
            ],
        }
    }
    cfg = project.config(jobs)
    loaded, db = project.load(jobs)
    flight = new_flight(db, loaded, "b")
    proc = start_run(cfg, flight)
    wait_for(mark)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    # It waited for step one to end (about 1 s), then stopped without starting step two.
    assert proc.returncode == 130, err  # interrupted, resumable
    assert time.monotonic() - t0 > 0.5
    with db.read() as conn:
        assert {j.job: j.status for j in dbf.get_jobs(conn, flight)} == {"j": "queued"}
        assert dbf.get_steps(conn, flight) == []
        assert dbf.get_flight(conn, flight).blessing == "running"  # type: ignore[union-attr]
    proc = start_run(cfg, flight)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with db.read() as conn:
        assert [(s.testid, s.status) for s in dbf.get_steps(conn, flight)] == [
            ("one", "pass"),
            ("two", "pass"),
        ]
