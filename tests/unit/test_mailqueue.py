"""The mail queue against a real SMTP server (aiosmtpd): delivery, headers and threading,
idempotent queueing, retries while the server is down, permanent failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pushgate.config import Loaded
from pushgate.db import mailqueue as dbm
from pushgate.db.engine import Database
from pushgate.judge.verdict import Classification
from pushgate.publish.mail.message import build_message, parse, serialize, thread_to_report
from pushgate.publish.mail.outbox import (
    CLAIM_S,
    deliver_due,
    enqueue,
    enqueue_report,
    mail_settings,
    mailer_for,
)
from pushgate.publish.report import BuiltReport
from tests.gateproject import make_gate_project
from tests.smtpserver import SmtpServer, free_port


def _loaded(tmp_path: Path, port: int) -> Loaded:
    mail = f'mode = "smtp"\nhost = "127.0.0.1"\nport = {port}\ndomain = "gate.example.org"'
    return make_gate_project(tmp_path / "p", mail=mail).load()


def _report(flight: int = 7) -> BuiltReport:
    c = Classification(
        flight=flight, branch="app", blessing="real", intended="real", outcome="all pass"
    )
    headers = {"X-Pushgate-Versions-This": "app=" + "a" * 40}
    return BuiltReport(
        flight,
        "app",
        f"[app test] {flight}: all pass - PUSHED",
        "flight 7 app real [real]\n\nPerfect :-)\n",
        headers,
        c,
        "pushed",
        "normal",
    )


def test_report_arrives_once_with_headers_and_recipients(db: Database, tmp_path: Path) -> None:
    with SmtpServer() as srv:
        loaded = _loaded(tmp_path, srv.port)
        rep = _report()
        assert enqueue_report(db, loaded, rep) is True
        assert enqueue_report(db, loaded, rep) is False  # idempotent: one per flight
        res = deliver_due(db, mailer_for(loaded))
        assert (res.sent, res.retry, res.failed) == (1, 0, 0)
        assert deliver_due(db, mailer_for(loaded)).sent == 0  # never mailed twice
        assert len(srv.received) == 1
        got = srv.received[0]
    assert sorted(got.rcpt_tos) == ["cc@example.org", "hidden@example.org", "list@example.org"]
    msg = parse(got.data)
    assert msg["Subject"] == "[app test] 7: all pass - PUSHED"
    assert msg["Message-ID"] == "<pushgate-report-7@gate.example.org>"
    assert msg["To"] == "App List <list@example.org>" and msg["Cc"] == "cc@example.org"
    assert "Bcc" not in msg and b"hidden@example.org" not in got.data
    assert msg["X-Pushgate-Versions-This"].strip() == "app=" + "a" * 40
    assert msg.get_content().startswith("flight 7 app real [real]\n")
    with db.read() as conn:
        row = dbm.get_mail(conn, "<pushgate-report-7@gate.example.org>")
    assert row is not None and row.status == "sent" and row.attempts == 1


def test_smtp_down_then_up_nothing_lost(db: Database, tmp_path: Path) -> None:
    srv = SmtpServer()  # not started yet: connections are refused
    loaded = _loaded(tmp_path, srv.port)
    for f in (1, 2, 3):
        enqueue_report(db, loaded, _report(f))
    t0 = time.time()
    res = deliver_due(db, mailer_for(loaded), now=t0)
    assert (res.sent, res.retry) == (0, 3)
    with db.read() as conn:
        rows = dbm.list_mail(conn)
    assert all(r.status == "queued" and r.attempts == 1 and r.last_error for r in rows)
    assert all(r.next_attempt >= t0 + 29 for r in rows)  # backoff: not due again at once
    assert deliver_due(db, mailer_for(loaded)).retry == 0  # nothing due yet
    with srv:
        res = deliver_due(db, mailer_for(loaded), now=time.time() + 31)
        assert res.sent == 3
        subjects = sorted(parse(r.data)["Subject"] for r in srv.received)
    assert subjects == [f"[app test] {f}: all pass - PUSHED" for f in (1, 2, 3)]
    with db.read() as conn:
        assert dbm.mail_counts(conn) == {"sent": 3}


def test_permanent_and_partial_failures(db: Database, tmp_path: Path) -> None:
    with SmtpServer() as srv:
        loaded = _loaded(tmp_path, srv.port)
        srv.rcpt_replies["cc@example.org"] = "451 try later"
        enqueue_report(db, loaded, _report(1))
        res = deliver_due(db, mailer_for(loaded))
        assert res.retry == 1 and len(srv.received) == 1  # the others got it already
        with db.read() as conn:
            row = dbm.list_mail(conn)[0]
        assert row.recipients == ["cc@example.org"] and row.status == "queued"
        del srv.rcpt_replies["cc@example.org"]
        assert deliver_due(db, mailer_for(loaded), now=time.time() + 60).sent == 1
        assert srv.received[1].rcpt_tos == ["cc@example.org"]
        for a in ("list@example.org", "cc@example.org", "hidden@example.org"):
            srv.rcpt_replies[a] = "550 no such user"
        enqueue_report(db, loaded, _report(2))
        assert deliver_due(db, mailer_for(loaded)).failed == 1
    with db.read() as conn:
        failed = [r for r in dbm.list_mail(conn) if r.flight == 2][0]
    assert failed.status == "failed" and "550" in (failed.last_error or "")


def test_retest_and_bisection_mails_thread_under_the_report(db: Database, tmp_path: Path) -> None:
    with SmtpServer() as srv:
        loaded = _loaded(tmp_path, srv.port)
        enqueue_report(db, loaded, _report(7))
        reply_to, refs = thread_to_report(7, "gate.example.org")
        msg = build_message(
            subject="[app bisection] complete test-x",
            body="culprit\n",
            from_addr="pushgate@localhost",
            to=["list@example.org"],
            cc=[],
            message_id="<pushgate-bisect-9@gate.example.org>",
            in_reply_to=reply_to,
            references=refs,
            extra_headers={},
        )
        assert enqueue(
            db,
            message_id="<pushgate-bisect-9@gate.example.org>",
            kind="bisect",
            flight=9,
            data=serialize(msg),
            recipients=["list@example.org"],
        )
        assert deliver_due(db, mailer_for(loaded)).sent == 2
        got = {parse(r.data)["Message-ID"]: parse(r.data) for r in srv.received}
    reply = got["<pushgate-bisect-9@gate.example.org>"]
    assert reply["In-Reply-To"] == "<pushgate-report-7@gate.example.org>"
    assert reply["References"] == "<pushgate-report-7@gate.example.org>"
    assert "<pushgate-report-7@gate.example.org>" in got


def test_a_claimed_message_is_not_sent_by_another_sender(db: Database, tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, free_port())
    enqueue_report(db, loaded, _report(1))
    now = time.time()
    with db.read() as conn:
        (m,) = dbm.due_mail(conn, now)
    with db.write() as conn:
        assert dbm.claim_mail(conn, m.id, now, CLAIM_S)
    with db.write() as conn:
        assert not dbm.claim_mail(conn, m.id, now, CLAIM_S)
    with db.read() as conn:
        assert dbm.due_mail(conn, now + CLAIM_S - 1) == []
        assert len(dbm.due_mail(conn, now + CLAIM_S + 1)) == 1  # a dead sender's claim ends


def test_mbox_mode_and_no_recipients(db: Database, tmp_path: Path) -> None:
    p = make_gate_project(tmp_path / "p", branch_extra="")
    loaded = p.load()
    s = mail_settings(loaded)
    assert s.mode == "mbox" and s.mbox_path == str(p.base / "state" / "mail.mbox")
    enqueue_report(db, loaded, _report(3))
    assert deliver_due(db, mailer_for(loaded)).sent == 1
    assert "[app test] 3: all pass - PUSHED" in Path(s.mbox_path).read_text()
    quiet = make_gate_project(tmp_path / "q").load()
    quiet = quiet.__class__(
        quiet.path,
        quiet.cfg.model_copy(
            update={
                "branches": {
                    "app": quiet.branch("app").model_copy(update={"mail_to": [], "mail_cc": []})
                }
            }
        ),
        quiet.jobs,
    )
    assert enqueue_report(db, quiet, _report(4)) is False


@pytest.mark.parametrize("attempts", [0, 1, 5])
def test_backoff_grows(db: Database, tmp_path: Path, attempts: int) -> None:
    loaded = _loaded(tmp_path, free_port())  # nothing listens there
    enqueue_report(db, loaded, _report(1))
    now = time.time()
    for i in range(attempts):
        deliver_due(db, mailer_for(loaded), now=now + 10_000 * (i + 1))
    with db.read() as conn:
        (row,) = dbm.list_mail(conn)
    assert row.attempts == attempts and row.status == "queued"
