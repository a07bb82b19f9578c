"""Mail message and transport against a real aiosmtpd server on loopback, and a real mbox."""

from __future__ import annotations

import inspect
import logging
import mailbox
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from pushgate.publish.mail.message import (
    build_message,
    envelope_recipients,
    header_items,
    make_message_id,
    parse,
    report_message_id,
    serialize,
    thread_to_report,
)
from pushgate.publish.mail.transport import (
    Mailer,
    MailError,
    MailSettings,
    MemoryMailer,
    PermanentMailError,
    SettingsMailer,
    TransientMailError,
    deliver,
    next_attempt_delay,
)
from tests.shared import osstest_reports
from tests.smtpserver import Cert, SmtpServer, free_port, make_cert

LONG = "L" * 120
BODY = (
    "flight 123 xen-unstable real [real]\n"
    "http://logs.example.org/osstest/logs/123/\n"
    "\n"
    "Regressions :-(\n"
    "\n"
    " test-amd64-amd64-xl   8 guest-start   fail REGR. vs. 122\n"
    "From the people who touched revisions under test:\n"
    ".\n"
    "..two dots\n"
    f"{LONG}\n"
    "trailing spaces   \n"
    "\ttab-indented\n"
)
FAILURES = (
    "xen-unstable:test-amd64-amd64-xl:guest-start:fail:regression\n"
    "xen-unstable:test-arm64-arm64-libvirt-raw:guest-start/debian.repeat:fail:heisenbug\n"
)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as srv:
        yield srv


def report(
    flight: int = 123,
    subject: str | None = None,
    body: str = BODY,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
) -> EmailMessage:
    return build_message(
        subject=subject or f"[xen-unstable test] {flight}: regressions - FAIL",
        body=body,
        from_addr="pushgate service <pushgate@example.org>",
        to=["xen-devel@lists.example.org", "Ada Admin <admin@example.org>"],
        cc=["cc@example.org"],
        message_id=report_message_id(flight, "example.org"),
        in_reply_to=in_reply_to,
        references=references or [],
        extra_headers={"X-Pushgate-Failures": FAILURES, "X-Pushgate-Flight": str(flight)},
        date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def smtp(port: int, **kw: object) -> MailSettings:
    return MailSettings(
        mode="smtp", host="127.0.0.1", port=port, timeout=5.0, from_addr="bounces@example.org", **kw
    )  # type: ignore[arg-type]


def test_smtp_delivery_headers_body_and_hidden_bcc(server: SmtpServer) -> None:
    in_reply_to, refs = thread_to_report(120, "example.org")
    msg = report(in_reply_to=in_reply_to, references=refs)
    rcpts = envelope_recipients(
        ["xen-devel@lists.example.org", "Ada Admin <admin@example.org>"],
        ["cc@example.org", "admin@example.org"],  # duplicate: one RCPT only
        ["secret-watcher@example.org"],
    )
    assert rcpts == [
        "xen-devel@lists.example.org",
        "admin@example.org",
        "cc@example.org",
        "secret-watcher@example.org",
    ]
    deliver(smtp(server.port), msg, rcpts)

    [got] = server.received
    assert got.mail_from == "bounces@example.org"
    assert got.rcpt_tos == rcpts  # Bcc address got the mail...
    assert b"secret-watcher" not in got.data  # ...but appears nowhere in it
    m = parse(got.data)
    assert "Bcc" not in m
    assert m["Subject"] == "[xen-unstable test] 123: regressions - FAIL"
    assert m["From"] == "pushgate service <pushgate@example.org>"
    assert [a.addr_spec for a in m["To"].addresses] == [
        "xen-devel@lists.example.org",
        "admin@example.org",
    ]
    assert m["Cc"] == "cc@example.org"
    assert m["Message-ID"] == "<pushgate-report-123@example.org>"
    assert m["In-Reply-To"] == "<pushgate-report-120@example.org>"
    assert m["References"] == "<pushgate-report-120@example.org>"
    assert m["Date"] == "Fri, 02 Jan 2026 03:04:05 +0000"
    assert m["X-Pushgate-Flight"] == "123"
    assert header_items(m, "X-Pushgate-Failures") == FAILURES.split()
    # osstest's shape on the wire: one 4-space-indented item per line, none refolded
    assert (
        b"\n    xen-unstable:test-arm64-arm64-libvirt-raw:guest-start/debian.repeat"
        b":fail:heisenbug\n" in got.data.replace(b"\r\n", b"\n")
    )
    assert m.get_content_type() == "text/plain"
    assert m.get_content_charset() == "utf-8"
    assert m.get_content() == BODY  # dots, "From ", long line, spaces, tab: all exact
    assert max(len(line) for line in got.data.splitlines()) <= 998


def test_non_ascii_and_overlong_body_survive_exactly(server: SmtpServer) -> None:
    body = (
        "People who touched revisions under test:\n  Jürgen Groß <jgross@example.org>\n"
        + "x" * 1500
        + "\nFrom here\n"
    )
    msg = report(body=body, subject="[linux test] 5: tolerable FAIL – Groß")
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    deliver(smtp(server.port), msg, ["admin@example.org"])
    m = parse(server.received[0].data)
    assert m.get_content() == body
    assert m["Subject"] == "[linux test] 5: tolerable FAIL – Groß"
    assert server.received[0].data.isascii()  # nothing relies on 8BITMIME/SMTPUTF8


def test_serialize_parse_round_trip_is_exact() -> None:
    msg = report(in_reply_to="<a@x>", references=["<r@x>", "<a@x>"])
    data = serialize(msg)
    assert serialize(parse(data)) == data
    again = parse(data)
    assert again.get_content() == BODY
    assert again["Message-ID"] == msg["Message-ID"]
    assert b"X-Pushgate-Failures: \n    xen-unstable:test-amd64-amd64-xl:guest-start:" in data


@pytest.mark.parametrize("name", ["xen-4.14-testing-152124.txt", "ovmf-167324.txt"])
def test_header_items_reads_both_osstest_foldings(name: str) -> None:
    text = (osstest_reports() / name).read_text()
    mail = text.split("-" * 72 + "\n", 1)[1]
    m = parse(mail.encode())
    items = header_items(m, "X-Osstest-Failures")
    assert len(items) >= 5
    assert all(i.count(":") >= 4 and i.split(":")[0] in name for i in items)


def test_message_ids_are_deterministic_and_thread() -> None:
    assert make_message_id("report", 123, "example.org") == "<pushgate-report-123@example.org>"
    assert make_message_id("retest", 124, "example.org") == make_message_id(
        "retest", 124, "example.org"
    )
    assert make_message_id("bisect", 7, "x.org") != make_message_id("bisect", 8, "x.org")
    assert thread_to_report(123, "example.org") == (
        "<pushgate-report-123@example.org>",
        ["<pushgate-report-123@example.org>"],
    )
    for bad_kind in ["", "a b", "a>b", "a\nb"]:
        with pytest.raises(ValueError):
            make_message_id(bad_kind, 1, "example.org")
    with pytest.raises(ValueError):
        make_message_id("report", 1, "example.org>\nBcc: x@y")


def test_build_refuses_header_injection_and_bad_input() -> None:
    def plain(to: str = "t@example.org", headers: dict[str, str] | None = None) -> EmailMessage:
        return build_message(
            subject="s",
            body="b",
            from_addr="a@example.org",
            to=[to],
            cc=[],
            message_id="<m@x>",
            in_reply_to=None,
            references=[],
            extra_headers=headers or {},
        )

    plain()  # the well-formed message builds: what follows fails for its one bad part
    with pytest.raises(ValueError):
        report(subject="ok\nBcc: victim@example.org")
    with pytest.raises(ValueError):
        plain(to="not an address")
    for name in ["Bcc", "Subject", "X Bad", "X:Bad"]:
        with pytest.raises(ValueError):
            plain(headers={name: "v"})
    with pytest.raises(ValueError):
        envelope_recipients(["nobody"])


def test_next_attempt_delay_backs_off_to_a_cap() -> None:
    got = [next_attempt_delay(n) for n in range(0, 10)]
    assert got[:5] == [0.0, 30.0, 60.0, 120.0, 240.0]
    assert got == sorted(got)
    assert next_attempt_delay(8) == 3600.0
    assert next_attempt_delay(10_000) == 3600.0


def test_starttls_with_auth_trusting_the_cert(cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_TEST_SMTP_PW", "s3cret-pw")
    with SmtpServer(tls=cert, users={"pushgate": "s3cret-pw"}) as srv:
        settings = smtp(
            srv.port,
            security="starttls",
            user="pushgate",
            password_env="PG_TEST_SMTP_PW",
            ca_file=str(cert.cert),
        )
        deliver(settings, report(), ["admin@example.org"])
        assert srv.received[0].login == "pushgate"
        assert parse(srv.received[0].data).get_content() == BODY


def test_starttls_unverified_when_told(cert: Cert) -> None:
    with SmtpServer(tls=cert) as srv:
        deliver(
            smtp(srv.port, security="starttls", tls_verify=False), report(), ["admin@example.org"]
        )
        assert len(srv.received) == 1


def test_starttls_untrusted_cert_is_permanent(cert: Cert) -> None:
    with SmtpServer(tls=cert) as srv:
        with pytest.raises(PermanentMailError, match="not trusted"):
            deliver(smtp(srv.port, security="starttls"), report(), ["admin@example.org"])
        assert srv.received == []


def test_implicit_tls_with_password_file(cert: Cert, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("file-pw\n")
    with SmtpServer(tls=cert, implicit_tls=True, users={"u": "file-pw"}) as srv:
        deliver(
            smtp(srv.port, security="tls", user="u", password_file=str(pw), ca_file=str(cert.cert)),
            report(),
            ["admin@example.org"],
        )
        assert srv.received[0].login == "u"


def test_wrong_password_is_permanent_and_never_shown(
    cert: Cert, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "hunter2-wrong-Pa55"
    monkeypatch.setenv("PG_TEST_SMTP_PW", secret)
    settings = smtp(
        0,
        security="starttls",
        user="pushgate",
        password_env="PG_TEST_SMTP_PW",
        ca_file=str(cert.cert),
    )
    # this server even quotes the submitted password back in its 535 reply
    with SmtpServer(tls=cert, users={"pushgate": "right"}, echo_password=True) as srv:
        settings.port = srv.port
        with pytest.raises(PermanentMailError) as info:
            deliver(settings, report(), ["admin@example.org"])
        assert srv.received == []
    err = info.value
    assert "535" in str(err) and "authentication" in str(err).lower()
    assert "***" in str(err)  # the echoed secret was there and got scrubbed
    for text in (str(err), repr(err), repr(settings), str(settings)):
        assert secret not in text
    assert err.__cause__ is None and err.__context__ is None
    assert err.recipients == ["admin@example.org"]


def test_missing_password_env_names_the_variable_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PG_TEST_NO_SUCH_PW", raising=False)
    s = smtp(free_port(), user="u", password_env="PG_TEST_NO_SUCH_PW")
    with pytest.raises(PermanentMailError, match="PG_TEST_NO_SUCH_PW"):
        deliver(s, report(), ["a@example.org"])


def test_server_down_is_transient() -> None:
    with pytest.raises(TransientMailError) as info:
        deliver(smtp(free_port()), report(), ["a@example.org", "b@example.org"])
    assert info.value.recipients == ["a@example.org", "b@example.org"]


def test_silent_server_times_out_transient() -> None:
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()  # accepts (kernel backlog) but never sends a greeting
        s = smtp(lsock.getsockname()[1])
        s.timeout = 0.3
        with pytest.raises(TransientMailError, match="timed out"):
            deliver(s, report(), ["a@example.org"])


def test_refused_recipients_transient_vs_permanent(server: SmtpServer) -> None:
    server.rcpt_replies["later@example.org"] = "451 4.3.0 try again later"
    server.rcpt_replies["gone@example.org"] = "550 5.1.1 no such user"
    # partial: the good address gets the mail; only the 4xx one is to be retried
    with pytest.raises(TransientMailError) as info:
        deliver(
            smtp(server.port), report(), ["ok@example.org", "later@example.org", "gone@example.org"]
        )
    assert info.value.recipients == ["later@example.org"]
    assert [r.rcpt_tos for r in server.received] == [["ok@example.org"]]
    with pytest.raises(PermanentMailError) as info2:
        deliver(smtp(server.port), report(), ["gone@example.org"])
    assert info2.value.recipients == ["gone@example.org"]
    assert "550" in str(info2.value)
    with pytest.raises(TransientMailError, match="451"):
        deliver(smtp(server.port), report(), ["later@example.org"])


def test_mbox_appends_parseable_messages(tmp_path: Path) -> None:
    path = tmp_path / "mail" / "pushgate.mbox"
    path.parent.mkdir()
    settings = MailSettings(mode="mbox", mbox_path=str(path), from_addr="pg@example.org")
    first = report(123)
    in_reply_to, refs = thread_to_report(123, "example.org")
    second = build_message(
        subject="[xen-unstable bisection] 130: testing test-amd64-amd64-xl",
        body="bisecting\nFrom 1 to 2\n",
        from_addr="pg@example.org",
        to=["a@example.org"],
        cc=[],
        message_id=make_message_id("bisect", 130, "example.org"),
        in_reply_to=in_reply_to,
        references=refs,
        extra_headers={},
    )
    deliver(settings, first, ["a@example.org"])
    deliver(settings, second, ["a@example.org", "hidden@example.org"])

    box = mailbox.mbox(str(path))
    try:
        msgs = [parse(box.get_bytes(k)) for k in box.keys()]
        assert box[box.keys()[0]].get_from().startswith("pg@example.org ")
    finally:
        box.close()
    assert len(msgs) == 2
    assert msgs[0]["Subject"] == first["Subject"]
    assert msgs[0].get_content() == BODY  # incl. "From the people..." unmangled
    assert header_items(msgs[0], "X-Pushgate-Failures") == FAILURES.split()
    assert msgs[1]["In-Reply-To"] == "<pushgate-report-123@example.org>"
    assert msgs[1].get_content() == "bisecting\nFrom 1 to 2\n"
    assert b"hidden@" not in path.read_bytes()
    assert b"\n>From " not in path.read_bytes()


def test_mbox_held_locked_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "box"
    holder = mailbox.mbox(str(path), create=True)
    holder.lock()
    try:
        s = MailSettings(mode="mbox", mbox_path=str(path), timeout=0.2)
        with pytest.raises(TransientMailError, match="locked"):
            deliver(s, report(), ["a@example.org"])
        # released soon: a waiting delivery then goes through
        threading.Timer(0.1, holder.unlock).start()
        s.timeout = 5.0
        deliver(s, report(), ["a@example.org"])
    finally:
        holder.close()
    assert len(mailbox.mbox(str(path))) == 1


def test_settings_validation_and_config() -> None:
    with pytest.raises(ValueError):
        MailSettings(mode="mbox")  # no path
    with pytest.raises(ValueError):
        MailSettings(mode="smtp", password_env="A", password_file="/b")
    assert MailSettings(mode="smtp", security="tls").port == 465
    assert MailSettings(mode="smtp", security="starttls").port == 587
    from pushgate.config import MailConfig

    s = MailSettings.from_config(
        MailConfig(mode="smtp", host="relay", port=2525, user="u", password_env="X")
    )
    assert (s.mode, s.host, s.port, s.user, s.password_env) == ("smtp", "relay", 2525, "u", "X")
    assert issubclass(TransientMailError, MailError) and issubclass(PermanentMailError, MailError)


def test_bcc_header_set_by_a_caller_is_stripped(server: SmtpServer, tmp_path: Path) -> None:
    msg = report()
    msg["Bcc"] = "sneaky@example.org"
    mbox = str(tmp_path / "m.mbox")
    deliver(smtp(server.port), msg, ["admin@example.org", "sneaky@example.org"])
    deliver(MailSettings(mode="mbox", mbox_path=mbox), msg, ["sneaky@example.org"])
    assert server.received[0].rcpt_tos == ["admin@example.org", "sneaky@example.org"]
    assert b"sneaky" not in server.received[0].data
    assert b"sneaky" not in Path(mbox).read_bytes()
    assert msg["Bcc"] == "sneaky@example.org"  # the caller's object is left alone


def test_logs_name_message_not_password(
    cert: Cert, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PG_TEST_SMTP_PW", "log-secret-77")
    caplog.set_level(logging.DEBUG)
    with SmtpServer(tls=cert, users={"u": "log-secret-77"}) as srv:
        deliver(
            smtp(
                srv.port,
                security="starttls",
                user="u",
                password_env="PG_TEST_SMTP_PW",
                tls_verify=False,
            ),
            report(),
            ["admin@example.org"],
        )
    assert "<pushgate-report-123@example.org>" in caplog.text
    assert "log-secret-77" not in caplog.text


def test_stale_dotlock_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "box"
    lock = tmp_path / "box.lock"
    lock.write_text("")  # left by a writer that crashed
    old = time.time() - 3600
    os.utime(lock, (old, old))
    deliver(
        MailSettings(mode="mbox", mbox_path=str(path), timeout=2.0), report(), ["a@example.org"]
    )
    assert len(mailbox.mbox(str(path))) == 1
    assert not lock.exists()


def test_memory_mailer_is_a_faithful_fake(server: SmtpServer) -> None:
    real: Mailer = SettingsMailer(smtp(server.port))
    fake = MemoryMailer(failures=[TransientMailError("451 later", ["a@example.org"])])
    assert inspect.signature(fake.send) == inspect.signature(real.send)
    assert inspect.signature(Mailer.send) == inspect.signature(MemoryMailer.send)
    msg = report()
    with pytest.raises(TransientMailError):
        fake.send(msg, ["a@example.org"])
    assert fake.sent == []
    fake.send(msg, ["a@example.org"])
    real.send(msg, ["a@example.org"])
    assert fake.sent[0].recipients == server.received[0].rcpt_tos
    assert fake.sent[0].message.get_content() == parse(server.received[0].data).get_content()
    assert fake.sent[0].data == serialize(msg)
