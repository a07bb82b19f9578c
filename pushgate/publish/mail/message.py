"""Building pushgate's mails: Message-IDs, threading headers, the message itself, and its
byte form (``serialize``/``parse``, used by the outbox to store and re-send the very same
message). Delivery is in ``transport``, the retry queue in ``outbox``."""

from __future__ import annotations

import email.policy
import email.utils
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.parser import BytesParser
from io import BytesIO
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# refold_source="none": headers we pre-fold (osstest's 4-space item lists) and headers of a
# parsed message keep their exact folding, so serialize(parse(b)) == b.
POLICY = email.policy.default.clone(refold_source="none", max_line_length=78, cte_type="8bit")

RFC_LINE_MAX = 998  # RFC 5322 hard limit on a line, without CRLF

_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    )
)


# ---------------------------------------------------------------- building


def make_message_id(kind: str, flight: int, domain: str) -> str:
    """Deterministic Message-ID, e.g. ``<pushgate-report-123@example.org>``.

    ``kind`` names the mail of the flight (``report``, ``retest``, ``bisect``, a job name...).
    """
    if not _TOKEN_RE.match(kind):
        raise ValueError(f"bad Message-ID kind {kind!r}")
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"bad Message-ID domain {domain!r}")
    if flight < 0:
        raise ValueError(f"bad flight number {flight}")
    return f"<pushgate-{kind}-{int(flight)}@{domain}>"


def report_message_id(flight: int, domain: str) -> str:
    """Message-ID of a flight's main report: the root of its mail thread."""
    return make_message_id("report", flight, domain)


def reply_headers(parent_id: str, parent_references: Sequence[str] = ()) -> tuple[str, list[str]]:
    """(In-Reply-To, References) for a mail answering ``parent_id`` (RFC 5322 3.6.4)."""
    refs = [r for r in parent_references if r != parent_id]
    return parent_id, [*refs, parent_id]


def thread_to_report(report_flight: int, domain: str) -> tuple[str, list[str]]:
    """(In-Reply-To, References) of a retest or bisection mail about ``report_flight``."""
    return reply_headers(report_message_id(report_flight, domain))


def envelope_recipients(
    to: Sequence[str], cc: Sequence[str] = (), bcc: Sequence[str] = ()
) -> list[str]:
    """Bare addresses for the SMTP envelope, de-duplicated, in order; Bcc included here
    (and only here: Bcc never appears in the headers)."""
    seen: set[str] = set()
    out: list[str] = []
    for _name, addr in email.utils.getaddresses([*to, *cc, *bcc]):
        if not addr or "@" not in addr:
            raise ValueError(f"bad mail address {addr!r}")
        if addr.lower() not in seen:
            seen.add(addr.lower())
            out.append(addr)
    return out


def _set_address_header(msg: EmailMessage, name: str, addrs: Sequence[str]) -> None:
    msg[name] = ", ".join(addrs)
    header = msg[name]
    if header.defects or any(not a.addr_spec or "@" not in a.addr_spec for a in header.addresses):
        raise ValueError(f"bad address in {name}: {', '.join(addrs)!r}")


def _set_extra_header(msg: EmailMessage, name: str, value: str) -> None:
    if not _HEADER_NAME_RE.match(name) or name.lower() in _OWN_HEADERS:
        raise ValueError(f"bad or reserved extra header name {name!r}")
    if "\r" in value:
        raise ValueError(f"carriage return in header {name}")
    items = [line.strip() for line in value.split("\n") if line.strip()]
    if len(items) > 1 and all(i.isascii() and len(i) + 4 <= RFC_LINE_MAX for i in items):
        # osstest's shape: name alone, then one 4-space-indented item per line; stored raw
        # so the policy keeps these lines exactly (header_items() reads both shapes).
        msg.set_raw(name, "".join(f"\n    {i}" for i in items))
    else:
        msg[name] = " ".join(items)


def header_items(msg: EmailMessage, name: str) -> list[str]:
    """Items of a multi-item header (``X-Pushgate-Failures``), folded either way."""
    value = msg.get(name)
    return str(value).split() if value is not None else []


def _choose_cte(body: str) -> str:
    lines = body.splitlines()
    if body.isascii() and all(len(line) <= RFC_LINE_MAX for line in lines):
        return "8bit"  # as osstest labels it; the content is in fact 7-bit clean
    # Non-ASCII or overlong lines: quoted-printable survives any relay, decodes exactly.
    return "quoted-printable"


def build_message(
    *,
    subject: str,
    body: str,
    from_addr: str,
    to: list[str],
    cc: list[str],
    message_id: str,
    in_reply_to: str | None,
    references: list[str],
    extra_headers: dict[str, str],
    date: datetime | None = None,
) -> EmailMessage:
    """A text/plain utf-8 mail. The body's lines are kept exactly (it gets a final newline
    if it lacks one; CRLF becomes LF). A multi-line ``extra_headers`` value is a list of
    items, written osstest-style one per 4-space-indented line. Bcc is for the envelope
    (``envelope_recipients``), never a header."""
    if not to and not cc:
        raise ValueError("a mail needs at least one To or Cc address")
    msg = EmailMessage(policy=POLICY)
    _set_address_header(msg, "From", [from_addr])
    if to:
        _set_address_header(msg, "To", to)
    if cc:
        _set_address_header(msg, "Cc", cc)
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in extra_headers.items():
        _set_extra_header(msg, name, value)
    if not body.endswith("\n"):
        body += "\n"
    msg.set_content(body, charset="utf-8", cte=_choose_cte(body))
    return msg


def serialize(msg: EmailMessage, linesep: str = "\n") -> bytes:
    """The exact bytes of ``msg`` (LF line ends by default), for storing in the queue."""
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=POLICY.clone(linesep=linesep)).flatten(msg)
    return out.getvalue()


def parse(data: bytes) -> EmailMessage:
    """Inverse of ``serialize``: serialize(parse(b)) == b for what serialize produced.
    Also reads a mail as it travels (CRLF line ends), e.g. as an SMTP server got it."""
    msg = BytesParser(policy=POLICY).parsebytes(data.replace(b"\r\n", b"\n"))
    assert isinstance(msg, EmailMessage)
    return msg
