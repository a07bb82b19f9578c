"""Delivering mails: SMTP or a local mbox, with transient and permanent errors.

The outbox stores ``serialize(msg)`` plus the envelope recipients, calls ``deliver`` and, on
``TransientMailError``, schedules another attempt ``next_attempt_delay(attempts)`` seconds later
for ``err.recipients``.

Secrets: the SMTP password is read only when connecting (``MailSettings.read_password``)
and is scrubbed from every error text; it is never stored on the settings object.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import logging
import mailbox
import os
import re
import smtplib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pushgate.errors import PushgateError
from pushgate.publish.mail.message import parse, serialize

if TYPE_CHECKING:
    from pushgate.config import MailConfig

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 30.0
BACKOFF_CAP_S = 3600.0
DOTLOCK_STALE_S = 300.0


class MailError(PushgateError):
    """Delivery failed. ``recipients`` are the addresses the failure concerns."""

    def __init__(self, text: str, recipients: Sequence[str] = ()) -> None:
        super().__init__(text)
        self.recipients = list(recipients)


class TransientMailError(MailError):
    """Worth retrying later: connection refused, timeout, 4xx reply, mbox locked."""


class PermanentMailError(MailError):
    """Retrying will not help: 5xx reply, authentication failure, bad configuration."""


@dataclass
class MailSettings:
    mode: Literal["smtp", "mbox"] = "mbox"
    host: str = "localhost"
    port: int = 0  # 0: the usual port for ``security`` (25, 587, 465)
    security: Literal["none", "starttls", "tls"] = "none"
    user: str | None = None
    password_env: str | None = None  # name of an environment variable, not the password
    password_file: str | None = None  # path of a file holding the password
    from_addr: str = "pushgate@localhost"
    mbox_path: str | None = None
    timeout: float = 30.0
    tls_verify: bool = True
    ca_file: str | None = None  # extra CA bundle, e.g. a farm's own mail relay cert

    def __post_init__(self) -> None:
        if self.mode not in ("smtp", "mbox"):
            raise ValueError(f"mail mode must be 'smtp' or 'mbox', not {self.mode!r}")
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError(f"mail security must be none/starttls/tls, not {self.security!r}")
        if self.password_env and self.password_file:
            raise ValueError("give only one of mail password_env and password_file")
        if self.mode == "mbox" and not self.mbox_path:
            raise ValueError("mail mode 'mbox' needs mbox_path")
        if self.port == 0:
            self.port = {"none": 25, "starttls": 587, "tls": 465}[self.security]

    @classmethod
    def from_config(cls, cfg: MailConfig) -> MailSettings:
        """Settings from the ``[mail]`` table of pushgate.toml."""
        return cls(
            mode=cfg.mode,
            host=cfg.host,
            port=cfg.port,
            security=cfg.security,
            user=cfg.user,
            password_env=cfg.password_env,
            password_file=cfg.password_file,
            from_addr=cfg.from_addr,
            mbox_path=cfg.mbox,
        )

    def read_password(self) -> str | None:
        """The SMTP password, read now (not cached); None when no login is configured."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise PermanentMailError(
                    f"mail password environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file:
            try:
                return Path(self.password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as e:
                raise PermanentMailError(
                    f"cannot read mail password file {self.password_file}: {e.strerror}"
                ) from None
        return None

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def next_attempt_delay(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed attempts: 0, 30 s, 1 min, 2 min ... 1 h."""
    if attempts <= 0:
        return 0.0
    if attempts > 20:  # 2**20 * 30 s is far past the cap; avoid huge integers
        return BACKOFF_CAP_S
    return min(BACKOFF_BASE_S * 2 ** (attempts - 1), BACKOFF_CAP_S)


# ---------------------------------------------------------------- delivery


def deliver(settings: MailSettings, msg: EmailMessage, recipients: list[str]) -> None:
    """Deliver ``msg`` to the envelope ``recipients`` (To, Cc and Bcc addresses).

    Raises ``TransientMailError`` (retry later) or ``PermanentMailError``. When some
    recipients were refused, the error's ``recipients`` are only those, so a retry does
    not mail the others twice.
    """
    if not recipients:
        raise PermanentMailError("no recipients")
    if "Bcc" in msg:
        msg = parse(serialize(msg))
        del msg["Bcc"]
    if settings.mode == "mbox":
        _deliver_mbox(settings, msg)
    else:
        _deliver_smtp(settings, msg, recipients)
    log.info(
        "mail %s delivered (%s) to %d recipient(s)",
        msg.get("Message-ID"),
        settings.mode,
        len(recipients),
    )


def _scrub(text: str, secret: str | None) -> str:
    """Remove the password, raw or base64'd (AUTH PLAIN/LOGIN), from a server's text."""
    if not secret:
        return text
    for s in (secret, base64.b64encode(secret.encode()).decode()):
        text = text.replace(s, "***")
    return text


def _reply_text(code: int, resp: bytes | str, secret: str | None) -> str:
    raw = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    return f"{code} {_scrub(raw, secret)}"


def _deliver_smtp(settings: MailSettings, msg: EmailMessage, recipients: list[str]) -> None:
    where = f"{settings.host}:{settings.port}"
    password = settings.read_password() if settings.user else None
    # Each failure is raised outside the except clauses: the library's exception (whose
    # text may quote the password back) must not even ride along as __context__.
    failure: MailError | None = None
    refused: dict[str, tuple[int, bytes]] = {}
    try:
        smtp: smtplib.SMTP
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout,
                context=settings.ssl_context(),
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with smtp:
            smtp.ehlo()
            if settings.security == "starttls":
                smtp.starttls(context=settings.ssl_context())
                smtp.ehlo()
            if settings.user:
                smtp.login(settings.user, password or "")
            # not send_message(): its generator mangles body lines starting "From "
            refused = smtp.sendmail(settings.from_addr, recipients, serialize(msg, "\r\n"))
    except smtplib.SMTPAuthenticationError as e:
        failure = PermanentMailError(
            f"SMTP authentication as {settings.user!r} at {where} failed: "
            f"{_reply_text(e.smtp_code, e.smtp_error, password)}",
            recipients,
        )
    except smtplib.SMTPRecipientsRefused as e:
        refused = e.recipients
    except smtplib.SMTPResponseException as e:
        text = f"SMTP {where}: {_reply_text(e.smtp_code, e.smtp_error, password)}"
        cls = TransientMailError if 400 <= e.smtp_code < 500 else PermanentMailError
        failure = cls(text, recipients)
    except smtplib.SMTPNotSupportedError as e:
        failure = PermanentMailError(f"SMTP {where}: {_scrub(str(e), password)}", recipients)
    except ssl.SSLCertVerificationError as e:
        failure = PermanentMailError(
            f"SMTP {where}: TLS certificate not trusted: {e.verify_message}", recipients
        )
    except UnicodeError:
        failure = PermanentMailError(
            f"SMTP {where}: non-ASCII envelope address needs SMTPUTF8", recipients
        )
    except (smtplib.SMTPException, OSError) as e:
        # refused, reset, timeout, DNS failure, TLS handshake trouble: try again later
        kind = "timed out" if isinstance(e, TimeoutError) else "failed"
        failure = TransientMailError(
            f"SMTP {where} {kind}: {_scrub(str(e) or type(e).__name__, password)}", recipients
        )
    if failure is not None:
        raise failure
    if refused:
        _raise_refused(refused, where, password)


def _raise_refused(refused: dict[str, tuple[int, bytes]], where: str, secret: str | None) -> None:
    detail = "; ".join(f"{a}: {_reply_text(c, r, secret)}" for a, (c, r) in refused.items())
    transient = [a for a, (c, _r) in refused.items() if 400 <= c < 500]
    if transient:
        raise TransientMailError(f"SMTP {where} refused recipients: {detail}", transient)
    raise PermanentMailError(f"SMTP {where} refused recipients: {detail}", list(refused))


def _mbox_safe(msg: EmailMessage) -> bytes:
    """The bytes to store in an mbox. A body line starting "From " would be mangled to
    ">From " (mboxo); instead re-encode the body quoted-printable with "=46rom", which
    decodes back exactly."""
    data = serialize(msg)
    body = msg.get_content() if msg.get_content_type() == "text/plain" else None
    if body is None or not re.search(r"(?m)^From ", body):
        return data
    copy = parse(data)
    copy.set_content(body, charset="utf-8", cte="quoted-printable")
    raw = copy.get_payload()
    assert isinstance(raw, str)
    copy.set_payload(re.sub(r"(?m)^From ", "=46rom ", raw))  # no charset: stays as encoded
    return serialize(copy)


def _break_stale_dotlock(path: str) -> None:
    """A dot-lock left by a crashed writer would block the mbox forever; lock holders keep
    it for milliseconds, so one older than DOTLOCK_STALE_S is taken to be stale."""
    lock = Path(path + ".lock")
    try:
        if time.time() - lock.stat().st_mtime > DOTLOCK_STALE_S:
            lock.unlink()
            log.warning("removed stale mbox lock %s", lock)
    except FileNotFoundError:
        pass


def _deliver_mbox(settings: MailSettings, msg: EmailMessage) -> None:
    assert settings.mbox_path
    data = _mbox_safe(msg)
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime())
    sender = email.utils.parseaddr(settings.from_addr)[1] or "MAILER-DAEMON"
    box = mailbox.mbox(settings.mbox_path, create=True)
    try:
        deadline = time.monotonic() + settings.timeout
        while True:
            try:
                box.lock()
                break
            except mailbox.ExternalClashError:
                _break_stale_dotlock(settings.mbox_path)
                if time.monotonic() > deadline:
                    raise TransientMailError(
                        f"mbox {settings.mbox_path} stayed locked by another process"
                    ) from None
                time.sleep(0.05)
        try:
            # bytes starting "From " give the envelope line of the mbox entry
            box.add(f"From {sender} {stamp}\n".encode() + data)
            box.flush()
        finally:
            box.unlock()
    except OSError as e:
        raise TransientMailError(f"mbox {settings.mbox_path}: {e.strerror or e}") from None
    finally:
        box.close()


# ---------------------------------------------------------------- interface for callers


class Mailer(Protocol):
    """What the queue and the report/bisect stages call; swap in MemoryMailer in tests."""

    def send(self, msg: EmailMessage, recipients: list[str]) -> None: ...


class SettingsMailer:
    """The real mailer: ``deliver`` with fixed settings."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    def send(self, msg: EmailMessage, recipients: list[str]) -> None:
        deliver(self.settings, msg, recipients)


@dataclass
class Sent:
    data: bytes  # serialize(msg), Bcc removed, as a real delivery would write it
    recipients: list[str]

    @property
    def message(self) -> EmailMessage:
        return parse(self.data)


@dataclass
class MemoryMailer:
    """A fake that keeps what it was sent. ``failures`` are raised, in order, by the next
    sends (to exercise retries); a failed send records nothing."""

    sent: list[Sent] = field(default_factory=list)
    failures: list[MailError] = field(default_factory=list)

    def send(self, msg: EmailMessage, recipients: list[str]) -> None:
        if not recipients:
            raise PermanentMailError("no recipients")
        if self.failures:
            raise self.failures.pop(0)
        copy = parse(serialize(msg))
        del copy["Bcc"]
        self.sent.append(Sent(serialize(copy), list(recipients)))
