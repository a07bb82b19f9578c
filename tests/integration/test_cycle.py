"""One push-gate cycle end to end on a real git project: push, no push, retest, baseline
test, block/force, a tested ref moved meanwhile, kill -9 at every stage, two cycles at once."""

from __future__ import annotations

import mailbox
from pathlib import Path

from pushgate.bisect.loop import run_open
from pushgate.config import Loaded
from pushgate.daemon.cycle import run_cycle
from pushgate.db import bisections as dbb
from pushgate.db import cycles as dbc
from pushgate.db import mailqueue as dbm
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.gate.push import block, force, unblock
from pushgate.publish.mail.transport import MemoryMailer
from pushgate.run.scheduler import run_flight
from tests.gateproject import GateProject, make_gate_project


def _open(p: GateProject) -> tuple[Database, Loaded]:
    loaded = p.load()
    db = Database(loaded.database_url)
    db.upgrade()
    return db, loaded


def _mbox_subjects(p: GateProject) -> list[str]:
    if not p.mbox.exists():
        return []
    return [str(m["Subject"]) for m in mailbox.mbox(str(p.mbox))]


def test_push_regression_retest_heisenbug_and_idle(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    db, loaded = _open(p)
    mailer = MemoryMailer()
    c1 = p.commit("hello")
    r1 = run_cycle(db, loaded, "app", mailer=mailer)
    assert r1.action == "done" and r1.push is not None
    assert r1.push.status == "pushed" and p.tested() == c1
    assert r1.report is not None and r1.report.subject == "[app test] 1: all pass - PUSHED"
    assert f"Pushing revision {c1}:" in r1.report.body
    assert " * [new branch]" in r1.report.body

    # A real regression: retested (one job), fails again, not pushed; one report, both flights.
    c2 = p.commit("hello BUG")
    r2 = run_cycle(db, loaded, "app", mailer=mailer)
    assert r2.report is not None and r2.push is not None
    assert r2.push.status == "not-pushed" and p.tested() == c1
    assert r2.report.subject == f"[app test] {r2.flight}: regressions - FAIL"
    with db.read() as conn:
        cyc = dbc.get_cycle(conn, r2.flight or 0)
    assert cyc is not None and cyc.retest_flight is not None
    body = r2.report.body
    lines = f"flight {r2.flight} app real [real]\nflight {cyc.retest_flight} app real-retest"
    assert lines in body
    assert "Not pushing." in body and f"commit {c2}" in body  # revision log when not pushed
    assert "test-content" in r2.report.headers["X-Pushgate-Failures"]

    # The fix, with an intermittent failure: the retest passes, so it is pushed.
    p.flag("flaky")
    c3 = p.commit("hello fixed")
    r3 = run_cycle(db, loaded, "app", mailer=mailer)
    assert r3.report is not None and r3.push is not None
    with db.read() as conn:
        cyc3 = dbc.get_cycle(conn, r3.flight or 0)
    assert cyc3 is not None and cyc3.retest_flight is not None
    assert r3.push.status == "pushed" and p.tested() == c3, r3.report.body
    assert r3.report.subject == f"[app test] {r3.flight}: tolerable FAIL - PUSHED"
    assert f"pass in {cyc3.retest_flight}-retest" in r3.report.body
    assert "Tests which are failing intermittently (not blocking):" in r3.report.body
    assert f"commit {c3}" not in r3.report.body  # pushed reports carry no revision log

    # Nothing new: idle, no flight, no mail.
    r4 = run_cycle(db, loaded, "app", mailer=mailer)
    assert r4.action == "idle" and r4.flight is None
    subjects = [s.message["Subject"] for s in mailer.sent]
    assert subjects == [r1.report.subject, r2.report.subject, r3.report.subject]
    sent = mailer.sent[1]
    assert sorted(sent.recipients) == ["cc@example.org", "hidden@example.org", "list@example.org"]
    assert "hidden" not in sent.data.decode()  # Bcc only in the envelope
    assert sent.message["Message-ID"] == f"<pushgate-report-{r2.flight}@pushgate.invalid>"
    db.dispose()


def test_baseline_untested_then_normal(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    db, loaded = _open(p)
    c1 = p.commit("one")
    p.set_tested(c1)  # someone set the tested ref by hand: never tested here
    c2 = p.commit("two")
    r1 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r1.report is not None and r1.push is not None
    assert r1.report.subject.startswith("[app baseline test] 1: ")
    assert r1.report.body.startswith('"Old" tested version had not actually been tested;')
    assert "flight we test it, rather than a new candidate." in r1.report.body
    assert r1.report.classification.this == {"app": c1}
    assert r1.push.status == "not-applicable" and "Push not applicable." in r1.report.body
    assert p.tested() == c1
    r2 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r2.report is not None and r2.push is not None
    assert r2.report.subject == "[app test] 2: all pass - PUSHED"
    assert r2.push.status == "pushed" and p.tested() == c2
    db.dispose()


def test_block_and_force(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path, branch_extra="repeat_pause_s = 3600")
    db, loaded = _open(p)
    c1 = p.commit("one")
    block(db, loaded, "app", "release freeze", by="Release Manager")
    r1 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r1.push is not None and r1.push.status == "not-pushed"
    assert "blocked: release freeze" in r1.push.output
    assert r1.push.why == "blocked: release freeze" and r1.push.decided_by == "Release Manager"
    assert r1.report is not None
    assert "Not pushing: blocked by Release Manager: release freeze" in r1.report.body
    assert p.tested() is None
    # A force clears the block: flight 1 passed, so its push goes through without a new
    # flight (the decision is carried out; the force is recorded as what decided it).
    force(db, loaded, "app", by="Release Manager")
    r2 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert (r2.action, r2.flight) == ("push", 1) and r2.push is not None
    assert r2.push.status == "pushed" and p.tested() == c1
    assert r2.push.why == "forced" and r2.push.decided_by == "Release Manager"
    with db.read() as conn:
        assert [c.flight for c in dbc.list_cycles(conn, "app")] == [1]
    with db.read() as conn:
        st = dbp.get_gate(conn, "app")
    assert not st.force and st.blocked_why is None  # the force was used up
    # A regression is not pushed... unless forced to exactly that revision.
    c2 = p.commit("BUG")
    r3 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r3.push is not None and r3.push.status == "not-pushed"
    force(db, loaded, "app", rev=c1)  # another revision: no effect on c2
    assert run_cycle(db, loaded, "app", mailer=MemoryMailer()).action == "idle"
    force(db, loaded, "app", rev=c2[:12])
    r4 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r4.push is not None and r4.push.status == "pushed" and p.tested() == c2
    assert r4.report is not None and r4.report.subject.endswith("regressions - FAIL - PUSHED")
    # Block wins when both are set in the database.
    block(db, loaded, "app", "again")
    unblock(db, loaded, "app")
    with db.read() as conn:
        assert dbp.get_gate(conn, "app").blocked_why is None
    db.dispose()


def test_tested_ref_moved_meanwhile_is_refused_and_reported(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path)
    db, loaded = _open(p)
    c1 = p.commit("one")
    run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert p.tested() == c1
    p.commit("two")
    other = p.work.commit("someone else's push", files={"x": "y\n"})
    p.work.push(p.bare, "HEAD:refs/heads/other")

    def run_and_move(d: Database, lo: Loaded, flight: int) -> object:
        out = run_flight(d, lo, flight)
        p.set_tested(other)  # moved by someone else while we tested
        return out

    r = run_cycle(db, loaded, "app", mailer=MemoryMailer(), run=run_and_move)
    assert r.push is not None and r.push.status == "refused"
    assert p.tested() == other  # not overwritten
    assert r.report is not None and "PUSHED" not in r.report.subject
    assert "Push refused (stale)" in r.report.body
    db.dispose()


def test_separate_push_repository(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path, separate_push_repo=True)
    db, loaded = _open(p)
    c1 = p.commit("one")
    r = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r.push is not None and r.push.status == "pushed"
    assert p.tested() == c1
    from tests.gitrepo import remote_head

    assert remote_head(p.bare, "tested") is None  # the input repository is untouched
    c2 = p.commit("two")
    r2 = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r2.report is not None and r2.report.classification.that == {"app": c1}
    assert r2.push is not None and r2.push.status == "pushed" and p.tested() == c2
    db.dispose()


def test_regressions_are_handed_to_the_bisector(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path, bisect=True, branch_extra="repeat_pause_s = 3600")
    db, loaded = _open(p)
    p.commit("one")
    run_cycle(db, loaded, "app", mailer=MemoryMailer())
    bad = p.commit("BUG")
    mailer = MemoryMailer()
    r = run_cycle(db, loaded, "app", mailer=mailer)
    assert r.action == "done", r.notes
    # The cycle only opens the bisection, and its report is mailed before any search.
    assert r.bisections and f"bisection {r.bisections[0]} opened" in r.notes, r.notes
    assert [s.message["Subject"] for s in mailer.sent] == [r.report.subject if r.report else ""]
    with db.read() as conn:
        cyc = dbc.get_cycle(conn, r.flight or 0)
        assert dbb.get_bisection(conn, r.bisections[0]).status == "running"  # type: ignore[union-attr]
    assert cyc is not None and cyc.stage == "done"
    done = run_open(db, loaded, mailer=mailer)
    assert [(b.job, b.testid, b.outcome, b.culprit_commit) for b in done] == [
        ("test-content", "check", "complete", bad)
    ]
    # The bisection mail replies to this cycle's report (a retest has no report of its
    # own: a failure found in it is threaded under the flight it retested).
    replies = [s.message for s in mailer.sent if s.message["In-Reply-To"]]
    assert replies and all(
        m["In-Reply-To"] == f"<pushgate-report-{r.flight}@pushgate.invalid>" for m in replies
    )
    assert run_cycle(db, loaded, "app", mailer=MemoryMailer()).action == "idle"
    db.dispose()


def test_mail_server_down_does_not_change_the_cycle(tmp_path: Path) -> None:
    from pushgate.db.schema import mail_queue
    from pushgate.publish.mail.message import parse
    from tests.smtpserver import SmtpServer

    srv = SmtpServer()  # down for now
    p = make_gate_project(tmp_path, mail=f'mode = "smtp"\nhost = "127.0.0.1"\nport = {srv.port}')
    c1 = p.commit("one")
    out = p.cli("branch", "run", "-q", "app")
    assert out.returncode == 0, out.stderr
    assert "push: pushed" in out.stdout and p.tested() == c1
    db, _ = _open(p)
    with db.read() as conn:
        (m,) = dbm.list_mail(conn)
    assert m.status == "queued" and m.attempts == 1 and "127.0.0.1" in (m.last_error or "")
    with db.write() as conn:  # skip the backoff wait
        conn.execute(mail_queue.update().values(next_attempt=0))
    with srv:
        out = p.cli("mail", "flush")
        assert "sent 1" in out.stdout, out.stdout + out.stderr
        assert [parse(r.data)["Subject"] for r in srv.received] == [
            "[app test] 1: all pass - PUSHED"
        ]
    db.dispose()


def test_schedule_makes_a_flight_when_nothing_is_new(tmp_path: Path) -> None:
    import time

    from pushgate.gate.cycle import make_flight, plan_cycle

    p = make_gate_project(tmp_path, branch_extra='schedule = "*/5 * * * *"')
    db, loaded = _open(p)
    c1 = p.commit("one")
    run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert p.tested() == c1
    assert plan_cycle(db, loaded, "app") is None  # not due yet: nothing to do
    plan = plan_cycle(db, loaded, "app", now=time.time() + 301)
    assert plan is not None and plan.mode == "up-to-date" and plan.target == c1
    flight = make_flight(db, loaded, "app", plan)
    r = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r.flight == flight and r.push is not None and r.push.status == "up-to-date"
    assert r.report is not None and r.report.subject == f"[app test] {flight}: all pass"
    assert "Published tested tree is already up to date." in r.report.body
    db.dispose()
