"""The exit statuses of the README's "Exit codes" table, for `flight run`, `branch run` and
`daemon --once`: 0 passed (pushed), 1 not passed / not pushed, 2 bad input (a missing
flight everywhere), 3 broken, 130 interrupted. Each is a real `pushgate` process.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.gateproject import GateProject, make_gate_project, wait_for

# Jobs added to the project's: test-broken's step exits with runner.broken_exit_code (a
# harness failure) when app.txt says BROKEN; test-hang's sleeps 20 s on HANG, 3 s on HANG3.
# They read the checkout, which a sandboxed step sees (the project's ctrl dir it may not).
EXTRA = """
[jobs.test-broken]
buildjob = "build"
[[jobs.test-broken.steps]]
testid = "infra"
command = 'if grep -q BROKEN "$PUSHGATE_SRC_APP/app.txt"; then exit 125; fi'

[jobs.test-hang]
buildjob = "build"
[[jobs.test-hang.steps]]
testid = "hang"
command = '''f="$PUSHGATE_SRC_APP/app.txt"
if grep -q HANG3 "$f"; then sleep 3; elif grep -q HANG "$f"; then sleep 20; fi'''
"""


@pytest.fixture
def gp(tmp_path: Path) -> GateProject:
    return make_gate_project(tmp_path, branch_extra="retest_max_fraction = 0", extra=EXTRA)


def run(gp: GateProject, *args: str) -> subprocess.CompletedProcess[str]:
    return gp.cli(*args)


def hang_running(gp: GateProject) -> bool:
    db = gp.base / "state" / "pushgate.db"
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute(
            "SELECT 1 FROM steps WHERE job = 'test-hang' AND testid = 'hang' AND status = 'running'"
        ).fetchall()
    return bool(rows)


def interrupted(gp: GateProject, *args: str, sig: signal.Signals, twice: bool) -> int:
    """Start `pushgate ARGS`, signal it once test-hang's step runs (twice: the steps are
    killed at once), and return its exit status."""
    proc = gp.spawn(*args)
    try:
        wait_for(lambda: hang_running(gp), 60, "the hanging step to start")
        proc.send_signal(sig)
        if twice:
            time.sleep(0.5)
            proc.send_signal(sig)
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_flight_run(gp: GateProject) -> None:
    def flight(text: str) -> subprocess.CompletedProcess[str]:
        gp.commit(text)
        new = run(gp, "flight", "new", "app")
        assert new.returncode == 0, new.stderr
        return run(gp, "flight", "run", "-q", new.stdout.strip())

    r = flight("hello")
    assert r.returncode == 0 and "outcome: all pass" in r.stdout, r.stdout + r.stderr
    r = flight("hello BUG")  # test-content fails: the thing under test
    assert r.returncode == 1 and "outcome: FAIL" in r.stdout, r.stdout + r.stderr
    r = flight("hello BROKEN")  # test-broken's step exits 125: the harness
    assert r.returncode == 3, r.stdout + r.stderr
    gp.commit("hello HANG")
    n = run(gp, "flight", "new", "app").stdout.strip()
    assert interrupted(gp, "flight", "run", "-q", n, sig=signal.SIGINT, twice=True) == 130
    assert run(gp, "flight", "show", n).returncode == 0
    # A missing flight is bad input everywhere.
    for args in (("flight", "run", "99"), ("flight", "show", "99"), ("report", "99")):
        r = run(gp, *args)
        assert r.returncode == 2 and r.stderr.strip() == "error: flight 99 does not exist", args


def test_branch_run(gp: GateProject) -> None:
    c1 = gp.commit("hello")
    r = run(gp, "branch", "run", "app")
    assert r.returncode == 0 and "push: pushed" in r.stdout and gp.tested() == c1, r.stdout
    r = run(gp, "branch", "run", "app")
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout + r.stderr

    gp.commit("hello BUG")  # a regression: not pushed
    r = run(gp, "branch", "run", "app")
    assert r.returncode == 1 and "regressions - FAIL" in r.stdout, r.stdout + r.stderr
    assert gp.tested() == c1

    gp.commit("hello fixed BROKEN")  # fixed, but a job is broken: only the harness blocks
    r = run(gp, "branch", "run", "app")
    assert r.returncode == 3 and "push: not-pushed" in r.stdout, r.stdout + r.stderr

    assert run(gp, "gate", "block", "app", "--why", "release freeze").returncode == 0
    gp.commit("hello fixed again")  # passes, but the gate is blocked: not pushed
    r = run(gp, "branch", "run", "app")
    assert r.returncode == 1 and "push: not-pushed" in r.stdout, r.stdout + r.stderr
    assert run(gp, "gate", "unblock", "app").returncode == 0

    c5 = gp.commit("hello once more")
    r = run(gp, "branch", "run", "app")
    assert r.returncode == 0 and gp.tested() == c5, r.stdout + r.stderr

    gp.commit("hello HANG")
    assert interrupted(gp, "branch", "run", "app", sig=signal.SIGINT, twice=True) == 130
    # SIGTERM, as the daemon stops its children, is an interruption too (the cycle resumed).
    assert interrupted(gp, "branch", "run", "app", sig=signal.SIGTERM, twice=True) == 130


def test_daemon_once(gp: GateProject) -> None:
    gp.commit("hello")
    r = run(gp, "daemon", "--once")
    assert r.returncode == 0, r.stderr
    gp.commit("hello BUG")
    r = run(gp, "daemon", "--once")
    assert r.returncode == 1, r.stderr
    assert "cycle exited with status" not in r.stderr  # not pushed is no failure
    gp.commit("hello HANG3")
    # The daemon passes SIGTERM on; its child stops after the current step (3 s).
    assert interrupted(gp, "daemon", "--once", sig=signal.SIGTERM, twice=False) == 130
