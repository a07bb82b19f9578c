"""A cycle killed with kill -9 at each stage, then rerun: the push happens exactly once and
the report is mailed exactly once; two cycles of one branch at once push at most once."""

from __future__ import annotations

import mailbox
import os
from pathlib import Path

import pytest

from pushgate.db import mailqueue as dbm
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from tests.conftest import PG_URL, _pg_schema_url
from tests.gateproject import GateProject, kill_group, make_gate_project, wait_for


def _open(p: GateProject) -> Database:
    db = Database(p.load().database_url)
    db.upgrade()
    return db


def _mbox_subjects(p: GateProject) -> list[str]:
    if not p.mbox.exists():
        return []
    return [str(m["Subject"]) for m in mailbox.mbox(str(p.mbox))]


# --- kill -9 at each stage, then rerun --------------------------------------------------------


def _report_mails(p: GateProject, flight: int) -> int:
    return sum(1 for s in _mbox_subjects(p) if f"] {flight}: " in s)


@pytest.mark.parametrize("stage", ["flight", "report", "push", "pushed", "mail"])
def test_kill_9_at_each_stage_then_rerun(tmp_path: Path, stage: str) -> None:
    p = make_gate_project(tmp_path)
    c1 = p.commit("one")
    marker = tmp_path / "paused"
    env = {"PUSHGATE_TEST_PAUSE_AT": stage, "PUSHGATE_TEST_PAUSE_FILE": str(marker)}
    if stage == "flight":
        p.flag("slow")
        proc = p.spawn("branch", "run", "-q", "app")
        wait_for(lambda: (p.ctrl / "slow-started").exists(), 60, "the slow step")
        p.flag("slow", False)
    else:
        proc = p.spawn("branch", "run", "-q", "app", env=env)
        wait_for(marker.exists, 60, f"pause at {stage}")
    kill_group(proc)
    assert stage in ("pushed", "mail") or p.tested() is None
    out = p.cli("branch", "run", "-q", "app")
    assert out.returncode == 0, out.stdout + out.stderr
    assert p.tested() == c1, out.stdout + out.stderr + p.cli("report", "1").stdout
    db = _open(p)
    with db.read() as conn:
        rows = dbp.pushes_of(conn, "app")
        mails = dbm.list_mail(conn)
    db.dispose()
    assert [(r.flight, r.status) for r in rows] == [(1, "pushed")]
    assert [(m.flight, m.status) for m in mails] == [(1, "sent")]
    assert _report_mails(p, 1) == 1
    assert _mbox_subjects(p) == ["[app test] 1: all pass - PUSHED"]
    # Nothing left to do, nothing mailed again.
    assert "nothing to do" in p.cli("branch", "run", "-q", "app").stdout
    assert _report_mails(p, 1) == 1


def test_two_branch_runs_at_once_push_once_postgresql(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_URL)
    try:
        with admin.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable in CI: {e}")
        pytest.skip(f"PostgreSQL unreachable: {e}")
    url, schema = _pg_schema_url()
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        p = make_gate_project(tmp_path, db_url=url)
        c1 = p.commit("one")
        db = _open(p)  # migrate once, before the racers
        procs = [
            p.spawn("branch", "run", "-q", "app", log=tmp_path / f"run{i}.log") for i in range(2)
        ]
        for pr in procs:
            assert pr.wait(120) == 0
        assert p.tested() == c1
        with db.read() as conn:
            rows = dbp.pushes_of(conn, "app")
            mails = dbm.list_mail(conn)
        db.dispose()
        assert [(r.flight, r.status) for r in rows] == [(1, "pushed")]
        assert len(mails) == 1
        assert _mbox_subjects(p) == ["[app test] 1: all pass - PUSHED"]
        logs = [(tmp_path / f"run{i}.log").read_text() for i in range(2)]
        assert sum("nothing to do" in x for x in logs) == 1, logs
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
