"""The push record is the truth (issue 12, item 1): a kill -9 during `git push`, a remote
unreachable at push time, a block lifted after a flight passed. Each ends with the tested
ref moved once, to the tested revision, and a record and report that say so."""

from __future__ import annotations

import json
import mailbox
import os
import signal
import time
from pathlib import Path

from pushgate.config import Loaded
from pushgate.daemon.cycle import run_cycle
from pushgate.db import cycles as dbc
from pushgate.db import mailqueue as dbm
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.gate.push import block, push_line, unblock
from pushgate.publish.mail.transport import MemoryMailer
from pushgate.run.scheduler import run_flight
from tests.gateproject import GateProject, kill_group, make_gate_project, wait_for
from tests.gitrepo import run_git

# An ssh stand-in: runs the remote command locally. The first git-receive-pack (a push)
# notes its pid in <ctrl>/paused and waits for <ctrl>/go; each one is counted.
FAKE_SSH = """#!/bin/sh
for a; do cmd=$a; done
case "$cmd" in
git-receive-pack*)
    echo $$ >> {ctrl}/receive-pack.calls
    if [ ! -e {ctrl}/paused ]; then
        echo $$ > {ctrl}/paused
        while [ ! -e {ctrl}/go ]; do sleep 0.05; done
    fi;;
esac
exec sh -c "$cmd"
"""


def _ssh_project(tmp_path: Path) -> tuple[GateProject, dict[str, str]]:
    """A project whose tested ref is pushed over "ssh" (FAKE_SSH) to tested.git."""
    p = make_gate_project(tmp_path, separate_push_repo=True)
    assert p.push_bare is not None
    cfg = p.cfg_path.read_text()
    p.cfg_path.write_text(
        cfg.replace(f'push_url = "{p.push_bare}"', f'push_url = "fakehost:{p.push_bare}"')
    )
    ssh = tmp_path / "fake-ssh"
    ssh.write_text(FAKE_SSH.format(ctrl=p.ctrl))
    ssh.chmod(0o755)
    return p, {"GIT_SSH_COMMAND": str(ssh), "GIT_SSH_VARIANT": "simple"}


def _open(p: GateProject) -> tuple[Database, Loaded]:
    loaded = p.load()
    db = Database(loaded.database_url)
    db.upgrade()
    return db, loaded


def _records(p: GateProject) -> tuple[list[tuple[int, str]], list[tuple[int | None, str]]]:
    db, _ = _open(p)
    with db.read() as conn:
        pushes = [(r.flight, r.status) for r in dbp.pushes_of(conn, "app")]
        mails = [(m.flight, m.status) for m in dbm.list_mail(conn)]
    db.dispose()
    return pushes, mails


def _subjects(p: GateProject) -> list[str]:
    return [str(m["Subject"]) for m in mailbox.mbox(str(p.mbox))] if p.mbox.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _ref_updates(repo: Path, ref: str = "refs/heads/tested") -> int:
    """How many times ref was moved in repo (its reflog; see _log_ref_updates)."""
    return len(run_git(repo, "reflog", "show", "--format=%H", ref, "--").split())


def _log_ref_updates(repo: Path) -> None:
    run_git(repo, "config", "core.logAllRefUpdates", "always")


def test_kill_9_of_the_group_during_git_push_stops_git_and_the_rerun_pushes(
    tmp_path: Path,
) -> None:
    p, env = _ssh_project(tmp_path)
    c1 = p.commit("one")
    proc = p.spawn("branch", "run", "-q", "app", env=env)
    wait_for((p.ctrl / "paused").exists, 90, "git push to reach the remote")
    helper = int((p.ctrl / "paused").read_text())
    kill_group(proc)
    # git and its ssh ran in pushgate's process group: the kill stopped them too.
    wait_for(lambda: not _alive(helper), 10, "the push's ssh helper to die with pushgate")
    (p.ctrl / "go").touch()
    assert p.tested() is None
    out = p.cli("branch", "run", "-q", "app", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "push: pushed" in out.stdout, out.stdout
    assert p.tested() == c1
    assert _records(p) == ([(1, "pushed")], [(1, "sent")])
    assert _subjects(p) == ["[app test] 1: all pass - PUSHED"]
    assert f"Pushing revision {c1}:" in p.cli("report", "1").stdout


def test_kill_9_of_pushgate_alone_during_git_push_the_rerun_waits_for_that_push(
    tmp_path: Path,
) -> None:
    p, env = _ssh_project(tmp_path)
    c1 = p.commit("one")
    proc = p.spawn("branch", "run", "-q", "app", env=env)
    wait_for((p.ctrl / "paused").exists, 90, "git push to reach the remote")
    os.kill(proc.pid, signal.SIGKILL)  # pushgate only: its git push lives on, orphaned
    proc.wait()
    rerun = p.spawn("branch", "run", "-q", "app", env=env, log=tmp_path / "rerun.log")
    try:
        time.sleep(3)
        # The rerun waits for the orphaned push rather than racing it with a second one.
        assert rerun.poll() is None, (tmp_path / "rerun.log").read_text()
        (p.ctrl / "go").touch()
        assert rerun.wait(90) == 0, (tmp_path / "rerun.log").read_text()
    finally:
        if rerun.poll() is None:
            kill_group(rerun)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert p.tested() == c1
    assert (p.ctrl / "receive-pack.calls").read_text().count("\n") == 1  # one git push
    assert _records(p) == ([(1, "pushed")], [(1, "sent")])
    assert _subjects(p) == ["[app test] 1: all pass - PUSHED"]
    report = p.cli("report", "1").stdout
    assert f"Pushing revision {c1}:" in report and f"already at {c1}" in report, report
    assert "refused" not in report.lower()


def test_unreachable_remote_is_pushed_by_a_later_cycle_once(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path, separate_push_repo=True)
    assert p.push_bare is not None
    tested_repo, away = p.push_bare, tmp_path / "away.git"
    _log_ref_updates(tested_repo)
    db, loaded = _open(p)
    c1 = p.commit("one")

    def run_then_unplug(d: Database, lo: Loaded, flight: int) -> object:
        out = run_flight(d, lo, flight)
        tested_repo.rename(away)  # the remote is unreachable when the push comes
        return out

    r1 = run_cycle(db, loaded, "app", mailer=MemoryMailer(), run=run_then_unplug)
    assert r1.push is not None and r1.push.status == "failed", r1.push
    line = push_line(r1.push)
    assert "failed" in line and "tried again next cycle" in line and "cannot list" in line
    assert r1.report is not None and "a later cycle tries it again" in r1.report.body
    assert "PUSHED" not in r1.report.subject
    # Still unreachable: the next cycle tries again, and makes no new flight.
    r2 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert (r2.action, r2.flight) == ("push", 1) and r2.push is not None
    assert r2.push.status == "failed" and r2.push.output.count("cannot list") == 2
    away.rename(tested_repo)
    out = p.cli("branch", "run", "-q", "app")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "flight 1" in out.stdout and "push: pushed" in out.stdout, out.stdout
    assert p.tested() == c1 and _ref_updates(tested_repo) == 1
    assert "nothing to do" in p.cli("branch", "run", "-q", "app").stdout
    with db.read() as conn:
        assert [c.flight for c in dbc.list_cycles(conn, "app")] == [1]
        assert [(r.flight, r.status) for r in dbp.pushes_of(conn, "app")] == [(1, "pushed")]
    assert f"Pushing revision {c1}:" in p.cli("report", "1").stdout
    assert _ref_updates(tested_repo) == 1
    db.dispose()


def test_unblock_pushes_a_passed_revision_without_a_new_flight(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    _log_ref_updates(p.bare)
    db, loaded = _open(p)
    c1 = p.commit("one")
    block(db, loaded, "app", "release freeze", by="Release Manager")
    out = p.cli("branch", "run", "-q", "app")
    assert out.returncode == 1, out.stdout + out.stderr  # not pushed
    assert "push: not-pushed (blocked by Release Manager: release freeze)" in out.stdout
    assert "nothing to do" in p.cli("branch", "run", "-q", "app").stdout  # still blocked
    unblock(db, loaded, "app")
    out = p.cli("branch", "run", "-q", "app")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "flight 1" in out.stdout and "push: pushed" in out.stdout, out.stdout
    assert p.tested() == c1 and _ref_updates(p.bare) == 1
    assert "nothing to do" in p.cli("branch", "run", "-q", "app").stdout
    with db.read() as conn:
        assert [c.flight for c in dbc.list_cycles(conn, "app")] == [1]
        (row,) = dbp.pushes_of(conn, "app")
    assert (row.status, row.why, row.decided_by) == ("pushed", "tolerable", None)
    # `report 1` is the report that was mailed (not pushed, blocked); the later push is
    # said apart from it, and the JSON carries the decision as it is now.
    out = p.cli("report", "1")
    assert out.stdout.startswith("Subject: [app test] 1: all pass\n"), out.stdout
    assert "Not pushing: blocked by Release Manager: release freeze" in out.stdout
    assert "decided again: now '[app test] 1: all pass - PUSHED'" in out.stderr, out.stderr
    js = json.loads(p.cli("report", "1", "--json").stdout)
    assert js["push"]["status"] == "pushed" and "No longer blocked" in js["push"]["output"]
    # The list hears of the late push once, in reply to the report.
    mails = list(mailbox.mbox(str(p.mbox)))
    assert [str(m["Subject"]) for m in mails] == [
        "[app test] 1: all pass",
        "Re: [app test] 1: all pass",
    ]
    assert mails[1]["In-Reply-To"] == mails[0]["Message-ID"]
    assert f"revision {c1} was pushed to tested" in mails[1].get_payload()
    db.dispose()


def test_a_regression_is_not_pushed_by_an_unblock(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path, branch_extra="repeat_pause_s = 3600")
    db, loaded = _open(p)
    p.commit("one")
    run_cycle(db, loaded, "app", mailer=MemoryMailer())
    c0 = p.tested()
    p.commit("BUG")
    block(db, loaded, "app", "freeze")
    r = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r.push is not None and r.push.status == "not-pushed"
    unblock(db, loaded, "app")
    assert run_cycle(db, loaded, "app", mailer=MemoryMailer()).action == "idle"
    assert p.tested() == c0
    db.dispose()


def test_refused_push_names_git_and_the_gate_in_the_cli_line(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    db, loaded = _open(p)
    p.commit("one")
    run_cycle(db, loaded, "app", mailer=MemoryMailer())
    p.commit("two")
    other = p.work.commit("someone else's push", files={"x": "y\n"})
    p.work.push(p.bare, "HEAD:refs/heads/other")

    def run_and_move(d: Database, lo: Loaded, flight: int) -> object:
        out = run_flight(d, lo, flight)
        p.set_tested(other)
        return out

    r = run_cycle(db, loaded, "app", mailer=MemoryMailer(), run=run_and_move)
    assert r.push is not None and r.push.status == "refused"
    line = push_line(r.push)
    assert line.startswith("refused (tolerable) - ") and "Push refused (stale)" in line, line
    assert f"tested is at {other}" in line, line
    # A refusal is final for its decision: not tried again (the next cycle tests the
    # baseline someone else pushed).
    r2 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r2.action == "done" and r2.reason == f"baseline {other} never tested", r2.reason
    assert p.tested() == other
    db.dispose()
