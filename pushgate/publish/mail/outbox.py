"""The mail queue: reports are queued in the database, then delivered with retries.

Queueing is idempotent: a message is keyed by its deterministic Message-ID (one per
flight and kind), so a cycle that is rerun after a crash queues nothing twice. Delivery
takes each due message for a while (`claim_mail`), sends it, and marks it sent; a
transient failure schedules another attempt with backoff (mail.next_attempt_delay), a
permanent one marks it failed. Nothing else waits on delivery: a flight's results and
the push never depend on mail working.

A sender killed between the SMTP server's acceptance and `mark_sent` would send that
message again when its claim runs out (at-least-once); the Message-ID is the same, so
list servers and mail clients see a duplicate, not a new report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pushgate.config import Loaded
from pushgate.db import mailqueue as dbm
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.errors import PushgateError
from pushgate.gate.push import PUSHED_STATUSES
from pushgate.publish.mail.message import (
    build_message,
    envelope_recipients,
    make_message_id,
    parse,
    serialize,
    thread_to_report,
)
from pushgate.publish.mail.transport import (
    Mailer,
    MailError,
    MailSettings,
    PermanentMailError,
    SettingsMailer,
    TransientMailError,
    next_attempt_delay,
)
from pushgate.publish.report import BuiltReport

log = logging.getLogger(__name__)

# How long a sender holds a message it is delivering before others may try it.
CLAIM_S = 300.0


def mail_settings(loaded: Loaded) -> MailSettings:
    """Mail settings from the config; the mbox defaults to <state>/mail.mbox and a relative
    mbox path is relative to the config file."""
    cfg = loaded.cfg.mail
    if cfg.mode == "mbox":
        path = (loaded.path.parent / cfg.mbox) if cfg.mbox else loaded.state_dir / "mail.mbox"
        cfg = cfg.model_copy(update={"mbox": str(path.resolve())})
    return MailSettings.from_config(cfg)


def mailer_for(loaded: Loaded) -> Mailer:
    s = mail_settings(loaded)
    if s.mbox_path:
        Path(s.mbox_path).parent.mkdir(parents=True, exist_ok=True)
    return SettingsMailer(s)


def report_message_id(loaded: Loaded, flight: int) -> str:
    return make_message_id("report", flight, loaded.cfg.mail.domain)


def enqueue_report(db: Database, loaded: Loaded, rep: BuiltReport) -> bool:
    """Queue the flight's report mail once; False if already queued or no recipients."""
    br = loaded.branch(rep.branch)
    if not br.mail_to and not br.mail_cc:
        log.info("flight %s: branch %s has no mail recipients", rep.flight, rep.branch)
        return False
    mid = report_message_id(loaded, rep.flight)
    with db.read() as conn:
        if dbm.get_mail(conn, mid) is not None:
            return False
    msg = build_message(
        subject=rep.subject,
        body=rep.body,
        from_addr=loaded.cfg.mail.from_addr,
        to=list(br.mail_to),
        cc=list(br.mail_cc),
        message_id=mid,
        in_reply_to=None,
        references=[],
        extra_headers=rep.headers,
    )
    rcpts = envelope_recipients(br.mail_to, br.mail_cc, br.mail_bcc)
    # Bcc goes to the envelope only: the stored message never carries it.
    return enqueue(
        db, message_id=mid, kind="report", flight=rep.flight, data=serialize(msg), recipients=rcpts
    )


def enqueue_late_push(db: Database, loaded: Loaded, push: dbp.PushRow) -> bool:
    """A flight whose report said it was not pushed was pushed later (a retried push, a
    push after unblock): say so once, in reply to the report, so the list hears of it."""
    if push.status not in PUSHED_STATUSES:
        return False
    rid = report_message_id(loaded, push.flight)
    with db.read() as conn:
        report = dbm.get_mail(conn, rid)
    if report is None:
        return False  # no report was mailed: nobody to tell
    br = loaded.branch(push.branch)
    subject = str(parse(report.message.encode("utf-8"))["Subject"])
    ref = loaded.trees[push.tree].tested_ref if push.tree in loaded.trees else "the tested ref"
    body = (
        f"Flight {push.flight}'s revision {push.revision} was pushed to {ref} after this\n"
        f"report was sent ({push.why or 'decided again'}).\n\n{push.output.rstrip()}\n"
    )
    in_reply_to, refs = thread_to_report(push.flight, loaded.cfg.mail.domain)
    msg = build_message(
        subject=subject if subject.startswith("Re: ") else f"Re: {subject}",
        body=body,
        from_addr=loaded.cfg.mail.from_addr,
        to=list(br.mail_to),
        cc=list(br.mail_cc),
        message_id=make_message_id("pushed", push.flight, loaded.cfg.mail.domain),
        in_reply_to=in_reply_to,
        references=refs,
        extra_headers={},
    )
    return enqueue(
        db,
        message_id=str(msg["Message-ID"]),
        kind="pushed",
        flight=push.flight,
        data=serialize(msg),
        recipients=envelope_recipients(br.mail_to, br.mail_cc, br.mail_bcc),
    )


def enqueue(
    db: Database,
    *,
    message_id: str,
    kind: str,
    flight: int | None,
    data: bytes,
    recipients: list[str],
) -> bool:
    """Queue serialized message bytes for the envelope recipients, once per Message-ID."""
    with db.write() as conn:
        return dbm.enqueue_mail(
            conn,
            message_id=message_id,
            kind=kind,
            flight=flight,
            recipients=recipients,
            message=data.decode("utf-8"),
            now=time.time(),
        )


@dataclass
class FlushResult:
    sent: int = 0
    retry: int = 0
    failed: int = 0


def deliver_due(
    db: Database, mailer: Mailer, *, now: float | None = None, limit: int = 50
) -> FlushResult:
    """Try every due message once; never raises for a delivery problem."""
    out = FlushResult()
    now = time.time() if now is None else now
    with db.read() as conn:
        due = dbm.due_mail(conn, now, limit)
    for m in due:
        with db.write() as conn:
            if not dbm.claim_mail(conn, m.id, now, CLAIM_S):
                continue  # another sender has it
        try:
            mailer.send(parse(m.message.encode("utf-8")), m.recipients)
        except Exception as e:  # noqa: BLE001 - no mail problem may stop a cycle
            if not isinstance(e, MailError):
                e = TransientMailError(f"{type(e).__name__}: {e}")
            permanent = isinstance(e, PermanentMailError)
            delay = next_attempt_delay(m.attempts + 1)
            with db.write() as conn:
                dbm.mark_failed(
                    conn,
                    m.id,
                    error=str(e),
                    permanent=permanent,
                    next_attempt=time.time() + delay,
                    recipients=e.recipients or None,
                )
            if permanent:
                out.failed += 1
            else:
                out.retry += 1
            log.warning(
                "mail %s not delivered (%s): %s",
                m.message_id,
                "giving up" if permanent else f"retry in {delay:.0f}s",
                e,
            )
            continue
        with db.write() as conn:
            dbm.mark_sent(conn, m.id, time.time())
        out.sent += 1
    return out


def flush(db: Database, loaded: Loaded, mailer: Mailer | None = None) -> FlushResult:
    return deliver_due(db, mailer or mailer_for(loaded))


class MailRetryError(PushgateError):
    """A mail asked to be sent again cannot be (absent, already sent, still queued)."""


def retry_failed(
    db: Database, loaded: Loaded, ids: list[int] | None, mailer: Mailer | None = None
) -> tuple[list[int], FlushResult]:
    """Send mails that failed for good again, once the config is fixed: those of `ids`
    (each must be `failed`), or every failed one when ids is None. They are queued again
    (so a sender that dies now leaves them queued, not lost) and delivered at once; a
    mail sent already is never sent again. Returns the ids queued and the delivery."""
    now = time.time()
    with db.write() as conn:
        if ids is None:
            ids = [m.id for m in dbm.list_mail(conn) if m.status == "failed"]
        for i in ids:
            m = dbm.get_mail_by_id(conn, i)
            if m is None:
                raise MailRetryError(f"mail {i} does not exist (see `pushgate mail list`)")
            if m.status != "failed":
                why = "was sent" if m.status == "sent" else "is queued; `mail flush` sends it"
                raise MailRetryError(f"mail {i} {why}: only failed mails are retried")
            dbm.requeue_failed(conn, i, now)
    if not ids:
        return [], FlushResult()
    return ids, deliver_due(db, mailer or mailer_for(loaded), now=now)


def subject_of(m: dbm.MailRow) -> str:
    """The stored message's Subject, for listings."""
    return str(parse(m.message.encode("utf-8"))["Subject"] or "(no subject)")
