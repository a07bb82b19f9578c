"""The stored verdict (issue 10): a report printed later is the report that was mailed;
`--now` recomputes and says so; a running flight names no regression; the blocked tip is
tested again and a heisenbug that failed its retest is pushed a flight later."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

from pushgate.config import Loaded
from pushgate.daemon.cycle import run_cycle
from pushgate.db import flights as dbf
from pushgate.db import verdicts as dbv
from pushgate.db.engine import Database
from pushgate.judge import verdicts
from pushgate.publish.report import build_report
from pushgate.run.plan import new_flight
from tests.gateproject import GateProject, make_gate_project

# Fails in flights 2 and 3 (a flight and its retest), passes in every other flight
# (braces doubled: make_gate_project formats `extra`).
HEISEN_JOB = """
[jobs.test-heisen]
buildjob = "build"
steps = [{{ testid = "h", command = "[ $PUSHGATE_FLIGHT -ne 2 ] && [ $PUSHGATE_FLIGHT -ne 3 ]" }}]
"""


def _open(p: GateProject) -> tuple[Database, Loaded]:
    loaded = p.load()
    db = Database(loaded.database_url)
    db.upgrade()
    return db, loaded


def _mailed(p: GateProject, flight: int) -> mailbox.mboxMessage:
    got = [m for m in mailbox.mbox(str(p.mbox)) if f"] {flight}: " in str(m["Subject"])]
    assert len(got) == 1, [m["Subject"] for m in mailbox.mbox(str(p.mbox))]
    return got[0]


def test_report_is_the_mailed_one_after_history_changes(tmp_path: Path, db_url: str) -> None:
    p = make_gate_project(tmp_path, db_url=db_url, extra=HEISEN_JOB)
    db, loaded = _open(p)
    c1 = p.commit("one")
    assert run_cycle(db, loaded, "app").push.status == "pushed"  # type: ignore[union-attr]
    c2 = p.commit("two")
    r2 = run_cycle(db, loaded, "app")  # flight 2 fails test-heisen; so does its retest 3
    assert r2.flight == 2 and r2.report is not None
    assert r2.report.subject == "[app test] 2: regressions - FAIL"
    # Nothing moved: the next cycle tests the same tuple again (osstest), and it passes.
    r4 = run_cycle(db, loaded, "app")
    assert r4.flight == 4 and r4.reason == "flight 2 did not push: testing again"
    assert r4.push is not None and r4.push.status == "pushed" and p.tested() == c2
    assert r4.report is not None
    same = [ln for ln in r4.report.body.splitlines() if ln.startswith("Testing same since")]
    assert len(same) == 1 and same[0].split()[3] == "2", same  # since flight 2 ...
    assert same[0].endswith(" 2 attempts"), same  # ... flights 2 and 4 (not the retest)

    # History now says flight 4 of the same tuple passed test-heisen; flight 2's report,
    # printed now, is still the one that was mailed, byte for byte.
    mailed = _mailed(p, 2)
    out = p.cli("report", "2")
    assert out.returncode == 0, out.stderr
    subject_line, rest = out.stdout.split("\n", 1)
    assert subject_line == f"Subject: {mailed['Subject']}"
    body = rest.split("\n\n", 1)[1]
    assert body.encode() == mailed.get_payload(decode=True)
    assert "REGR. vs. 1" in body and "Not pushing." in body

    now = p.cli("report", "2", "--now")
    assert now.returncode == 0, now.stderr
    first, rest_now = now.stdout.split("\n", 1)
    assert first.startswith("Recomputed now against today's history")
    assert rest_now != out.stdout and "pass in 4" in rest_now
    js = json.loads(p.cli("report", "2", "--json").stdout)
    assert js["subject"] == "[app test] 2: regressions - FAIL" and "recomputed" not in js

    # One stored verdict per judged flight, with its failures as rows.
    with db.read() as conn:
        v2 = dbv.get_verdict(conn, 2)
        rows = dbv.failures_of(conn, 2)
    assert v2 is not None and v2.blocking and v2.outcome == "FAIL"
    assert [(r.job, r.testid, r.kind, r.blocks) for r in rows if r.in_flight is None] == [
        ("test-heisen", "h", "regression", True)
    ]
    assert c1 != c2
    db.dispose()


def test_verdict_is_stored_once(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    db, loaded = _open(p)
    p.commit("one")
    run_cycle(db, loaded, "app")
    first = verdicts.stored(db, 1)
    assert first is not None
    again = verdicts.record(db, loaded, 1)  # judged again: the stored verdict stands
    assert again.decided == first.decided and again.to_json() == first.to_json()
    db.dispose()


def test_running_flight_report_names_no_regression(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    db, loaded = _open(p)
    p.commit("one")
    flight = new_flight(db, loaded, "app")
    with db.write() as conn:  # one job has finished, the others are still queued
        dbf.set_job_status(conn, flight, "build", "pass", final=True)
    rep = build_report(db, loaded, flight)
    assert rep.subject == f"[app test] {flight}: running"
    assert "still running: 1 of 5 jobs have finished" in rep.body
    assert "REGR" not in rep.body and rep.data["failures"] == [] and rep.data["running"]
    assert verdicts.stored(db, flight) is None  # nothing stored for an unfinished flight
    db.dispose()


def test_retest_max_fraction_zero_gives_no_retest(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path, branch_extra="retest_max_fraction = 0\nrepeat_pause_s = 3600")
    db, loaded = _open(p)
    p.commit("one")
    run_cycle(db, loaded, "app")
    p.commit("BUG")
    r = run_cycle(db, loaded, "app")
    assert "no retest: retest_max_fraction = 0" in r.notes
    with db.read() as conn:
        blessings = [dbf.bless_as(conn, f) for f in (1, 2)]
        assert dbf.get_flight(conn, 3) is None  # no retest flight was made
    assert blessings == ["real", "real"]
    # The pause holds the repeat of the same tuple back.
    assert run_cycle(db, loaded, "app").action == "idle"
    db.dispose()


def test_every_report_says_steps_not_isolated(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    cfg = p.cfg_path.read_text()
    p.cfg_path.write_text(cfg.replace("[runner]\n", '[runner]\nisolation = "none"\n', 1))
    db, loaded = _open(p)
    p.commit("one")
    r = run_cycle(db, loaded, "app")
    assert r.report is not None and r.report.body.startswith("steps not isolated:")
    assert r.report.data["isolated"] is False
    assert "steps not isolated" in _mailed(p, r.flight or 0).get_payload()
    # With isolation on (the default), the line is absent.
    p2 = make_gate_project(tmp_path / "on")
    db2, loaded2 = _open(p2)
    p2.commit("one")
    r2 = run_cycle(db2, loaded2, "app")
    assert r2.report is not None and "not isolated" not in r2.report.body
    db.dispose()
    db2.dispose()
