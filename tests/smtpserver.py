"""A real SMTP server (aiosmtpd) on a free loopback port, for tests.

    with SmtpServer() as srv: ...                     # plain SMTP
    with SmtpServer(tls=make_cert(tmp)) ...            # STARTTLS offered
    with SmtpServer(tls=cert, implicit_tls=True) ...   # TLS from the first byte (SMTPS)
    with SmtpServer(tls=cert, users={"u": "pw"}) ...   # AUTH PLAIN/LOGIN after STARTTLS

Received mails are in ``srv.received`` (envelope sender, recipients, raw bytes).
``srv.rcpt_replies`` maps an address to the reply its RCPT gets (e.g. "451 later").
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Cert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_cert(directory: Path) -> Cert:
    """A self-signed cert for 127.0.0.1/localhost, made with the openssl CLI (EC: fast)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return Cert(cert, key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        login = session.login_data.decode() if isinstance(session.login_data, bytes) else None
        with self.lock:
            self.received.append(
                Received(str(envelope.mail_from), list(envelope.rcpt_tos), data, login)
            )
        return "250 OK"


class _Auth:
    def __init__(self, users: dict[str, str], echo_password: bool) -> None:
        self.users = users
        self.echo_password = echo_password

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, pw = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(user) == pw:
                return AuthResult(success=True, auth_data=auth_data)
            if self.echo_password:  # a careless server that quotes the secret back
                return AuthResult(success=False, handled=False, message=f"535 bad password {pw}")
        return AuthResult(success=False, handled=False)


class SmtpServer:
    def __init__(
        self,
        *,
        tls: Cert | None = None,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        echo_password: bool = False,
    ) -> None:
        self.handler = _Handler()
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if tls and implicit_tls:
            kwargs["ssl_context"] = tls.server_context()
        elif tls:
            kwargs["tls_context"] = tls.server_context()
        if users is not None:
            kwargs["authenticator"] = _Auth(users, echo_password)
            kwargs["auth_require_tls"] = tls is not None and not implicit_tls
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=5.0, **kwargs
        )

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def rcpt_replies(self) -> dict[str, str]:
        return self.handler.rcpt_replies

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.controller.stop()
