"""Bisections run beside the gate in `pushgate daemon`: while a bisection with slow probe
steps runs, the same branch tests and pushes a new revision (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from pushgate.db import bisections as dbb
from pushgate.db import cycles as dbc
from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.model import FlightInfo
from tests.gateproject import GateProject, make_gate_project, wait_for

# A second job broken by the same commit, whose step is slow in bisection probes only
# (the probe job carries the `bisect_host` runvar, exported to its steps).
SLOW_IN_PROBES = """
[jobs.test-slowbug]
buildjob = "build"
[[jobs.test-slowbug.steps]]
testid = "check"
command = '''if [ -n "${{bisect_host:-}}" ] && [ -e CTRL/probe-slow ]; then
sleep "$(cat CTRL/probe-slow)"; fi
! grep -q BUG "$PUSHGATE_SRC_APP/app.txt"'''
"""


def _db(p: GateProject) -> Database:
    db = Database(p.load().database_url)
    db.upgrade()
    return db


def _probes(db: Database) -> list[FlightInfo]:
    with db.read() as conn:
        return [f for f in dbf.list_flights(conn, "app", 1000) if f.blessing == "real-bisect"]


def _running(db: Database) -> list[dbb.BisectionRow]:
    with db.read() as conn:
        return dbb.running(conn)


def _done(db: Database, target: str) -> dbc.CycleRow | None:
    with db.read() as conn:
        return next(
            (c for c in dbc.list_cycles(conn, "app") if c.target == target and c.stage == "done"),
            None,
        )


def test_a_branch_flight_runs_while_a_bisection_of_the_branch_runs(
    tmp_path: Path, db_url: str
) -> None:
    p = make_gate_project(
        tmp_path,
        db_url=db_url,
        bisect=True,
        slots=3,
        branch_extra="repeat_pause_s = 3600",  # the blocked tip is not flown again here
        extra=SLOW_IN_PROBES.replace("CTRL", str(tmp_path / "ctrl")),
    )
    p.commit("one")
    assert p.cli("branch", "run", "-q", "app").returncode == 0
    p.commit("two")
    bad = p.commit("BUG three")
    p.commit("BUG four")
    out = p.cli("branch", "run", "-q", "app")
    assert out.returncode == 1, out.stderr  # regressions: not pushed (README "Exit codes")
    db = _db(p)
    with db.read() as conn:
        opened = dbb.running(conn)
    # The cycle opened one bisection per regression and searched nothing.
    assert sorted((b.job, b.testid) for b in opened) == [
        ("test-content", "check"),
        ("test-slowbug", "check"),
    ], out.stdout
    assert not _probes(db)

    p.flag("probe-slow", content="2")
    p.flag("slow", content="2")  # the branch flight's test-slow takes 2 s too
    log = tmp_path / "daemon.log"
    d = p.spawn("daemon", "--poll", "0.3", log=log)
    try:
        wait_for(lambda: any(f.started for f in _probes(db)), 60, "a probe flight to start")
        fixed = p.commit("fixed")
        wait_for(lambda: _done(db, fixed), 90, "the cycle of the new revision")
        wait_for(lambda: not _running(db), 180, "the bisections to end")
        d.send_signal(signal.SIGTERM)
        assert d.wait(60) == 0, log.read_text()
    finally:
        if d.poll() is None:
            os.killpg(d.pid, signal.SIGKILL)
    cyc = _done(db, fixed)
    assert cyc is not None and p.tested() == fixed, log.read_text()
    with db.read() as conn:
        flight = dbf.get_flight(conn, cyc.flight)
        ended = [dbb.get_bisection(conn, b.id) for b in opened]
    probes = _probes(db)
    db.dispose()
    assert flight is not None and flight.started and flight.finished
    assert all(b is not None and b.finished for b in ended)
    assert [(b.status, b.culprit_commit) for b in ended if b] == [("complete", bad)] * 2
    # The branch flight started after the search's first probe flight, ran beside its
    # probe flights, and finished before the bisection that ran them ended.
    first = min(f.started or 0 for f in probes)
    searched = ended[0]  # the oldest is searched first; the other concludes from its flights
    assert searched is not None and searched.finished
    assert first < flight.started < flight.finished < searched.finished, (first, flight)
    beside = [
        f.flight
        for f in probes
        if f.started and f.finished and f.started < flight.finished and f.finished > flight.started
    ]
    assert beside, (flight, probes)
    text = log.read_text()
    for b in opened:
        assert f"bisection {b.id} started: app {b.job} {b.testid}" in text, text
        assert f"bisection {b.id} ended: complete app {bad}" in text, text
