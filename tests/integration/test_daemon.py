"""`pushgate daemon` as a real process: the osstest scenario over three input revisions,
kill -9 mid-flight then restart, SIGTERM stops after the current step, --once."""

from __future__ import annotations

import mailbox
import os
import signal
import subprocess
from pathlib import Path

from pushgate.db import cycles as dbc
from pushgate.db import mailqueue as dbm
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from tests.gateproject import GateProject, kill_group, make_gate_project, wait_for

POLL = "0.3"


def _db(p: GateProject) -> Database:
    db = Database(p.load().database_url)
    db.upgrade()
    return db


def _cycles(p: GateProject) -> list[dbc.CycleRow]:
    db = _db(p)
    try:
        with db.read() as conn:
            return dbc.list_cycles(conn, "app")
    finally:
        db.dispose()


def _done_for(p: GateProject, target: str) -> dbc.CycleRow | None:
    for c in _cycles(p):
        if c.target == target and c.stage == "done":
            return c
    return None


def _subjects(p: GateProject) -> list[str]:
    return [str(m["Subject"]) for m in mailbox.mbox(str(p.mbox))] if p.mbox.exists() else []


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def test_daemon_three_revisions_pushed_not_pushed_pushed_after_retest(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    c1 = p.commit("one")
    once = p.cli("daemon", "--once")
    assert once.returncode == 0, once.stderr
    assert p.tested() == c1
    assert _subjects(p) == ["[app test] 1: all pass - PUSHED"]

    d = p.spawn("daemon", "--poll", POLL, log=tmp_path / "daemon.log")
    try:
        c2 = p.commit("BUG")
        wait_for(lambda: _done_for(p, c2), 90, "the cycle of the buggy revision")
        assert p.tested() == c1
        p.flag("flaky")
        c3 = p.commit("fixed")
        wait_for(lambda: _done_for(p, c3), 90, "the cycle of the fix")
        assert _stop(d) == 0
    finally:
        if d.poll() is None:
            os.killpg(d.pid, signal.SIGKILL)
    log = (tmp_path / "daemon.log").read_text()
    cyc2, cyc3 = _done_for(p, c2), _done_for(p, c3)
    assert cyc2 is not None and cyc3 is not None
    assert cyc3.retest_flight is not None, log
    assert p.tested() == c3, log
    subjects = _subjects(p)
    assert subjects == [
        "[app test] 1: all pass - PUSHED",
        f"[app test] {cyc2.flight}: regressions - FAIL",
        f"[app test] {cyc3.flight}: tolerable FAIL - PUSHED",
    ], log
    body = [m for m in mailbox.mbox(str(p.mbox))][2].get_payload()
    assert f"pass in {cyc3.retest_flight}-retest" in str(body)


def test_daemon_kill_9_mid_flight_then_restart(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    p.flag("slow")
    c1 = p.commit("one")
    d = p.spawn("daemon", "--poll", POLL)
    wait_for(lambda: (p.ctrl / "slow-started").exists(), 60, "the slow step")
    kill_group(d)  # the daemon and its cycle, as a service manager would
    assert p.tested() is None
    p.flag("slow", False)
    d = p.spawn("daemon", "--poll", POLL)
    try:
        wait_for(lambda: _done_for(p, c1), 90, "the resumed cycle")
        assert _stop(d) == 0
    finally:
        if d.poll() is None:
            os.killpg(d.pid, signal.SIGKILL)
    assert p.tested() == c1
    db = _db(p)
    with db.read() as conn:
        assert [(r.flight, r.status) for r in dbp.pushes_of(conn, "app")] == [(1, "pushed")]
        assert [(m.flight, m.status) for m in dbm.list_mail(conn)] == [(1, "sent")]
    db.dispose()
    assert _subjects(p) == ["[app test] 1: all pass - PUSHED"]


def test_sigterm_stops_after_the_current_step(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    p.flag("slow", content="2")
    c1 = p.commit("one")
    d = p.spawn("daemon", "--poll", POLL)
    wait_for(lambda: (p.ctrl / "slow-started").exists(), 60, "the slow step")
    assert _stop(d) == 0
    db = _db(p)
    with db.read() as conn:
        cyc = dbc.latest_cycle(conn, "app")
        assert cyc is not None and cyc.stage == "flight"  # stopped inside the flight
        assert not dbc.flight_finished(conn, cyc.flight)
    from pushgate.db import flights as dbf

    with db.read() as conn:
        steps = {(s.job, s.testid): s.status for s in dbf.get_steps(conn, cyc.flight)}
    assert steps[("test-slow", "slow")] == "pass"  # the running step was let finish
    db.dispose()
    p.flag("slow", False)
    out = p.cli("daemon", "--once")
    assert out.returncode == 0, out.stderr
    assert p.tested() == c1
    assert _subjects(p) == ["[app test] 1: all pass - PUSHED"]


SECOND_BRANCH = """
[trees.app2]
url = "{bare}"
input_ref = "main"
tested_ref = "tested2"

[branches.app2]
tree = "app2"
other_trees = ["app"]
jobs = ["build", "test-*"]
mail_to = ["list@example.org"]
bisect = false
"""


def test_branches_run_in_parallel(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path, slots=2, extra=SECOND_BRANCH)
    p.flag("slow", content="1.5")  # each flight takes at least 1.5 s
    c1 = p.commit("one")
    out = p.cli("daemon", "--once")
    assert out.returncode == 0, out.stderr
    from tests.gitrepo import remote_head

    assert p.tested() == c1 and remote_head(p.bare, "tested2") == c1
    db = _db(p)
    from pushgate.db import flights as dbf

    with db.read() as conn:
        fl = {f.branch: f for f in dbf.list_flights(conn)}
    db.dispose()
    a, b = fl["app"], fl["app2"]
    assert a.started and a.finished and b.started and b.finished
    assert a.started < b.finished and b.started < a.finished  # the two flights overlapped
    assert sorted(_subjects(p)) == [
        "[app test] 1: all pass - PUSHED",
        "[app2 test] 2: all pass - PUSHED",
    ] or sorted(_subjects(p)) == [
        "[app test] 2: all pass - PUSHED",
        "[app2 test] 1: all pass - PUSHED",
    ]
