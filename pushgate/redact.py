"""Text on its way out of pushgate: credentials hidden, control characters made inert.

Ground floor: imports nothing of pushgate's, so every stage (git, config, the renderers,
the CLI) can use the one definition.

- `redact_url` hides the credentials of URLs in any text: the password of
  `scheme://user:password@host` becomes `***`, and a lone user name in an http(s) URL
  (`https://TOKEN@host`, the form hosting sites give their tokens) becomes `***` too.
  A tree's URL is stored and shown only in this form; git gets the real one from the
  config (`Loaded.git_url`).
- `inert` escapes the characters that act on a terminal (C0 controls, DEL, C1 controls,
  bidirectional overrides) as `\\xNN` / `\\uNNNN`, for untrusted text the CLI prints.
"""

from __future__ import annotations

import re

# user:password@ in the authority of any scheme://; the password runs to the last '@'
# before the path (an unencoded '@' in a password must not leave its tail visible).
_PASSWORD = re.compile(r"(?P<pre>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/\s]*@")
# A user name alone in an http(s)/ftp(s) URL: often the token itself.
_HTTP_USER = re.compile(r"(?i)(?P<pre>\b(?:https?|ftps?)://)(?!\*\*\*@)[^/@:\s]+@")
REDACTED = "***"


def redact_url(text: str) -> str:
    """`text` with every URL credential replaced by `***` (idempotent)."""
    if "@" not in text:
        return text
    text = _PASSWORD.sub(r"\g<pre>:***@", text)
    return _HTTP_USER.sub(r"\g<pre>***@", text)


def _inert_table(keep: str) -> dict[int, str]:
    codes = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
    table = {c: f"\\x{c:02x}" for c in codes if chr(c) not in keep}
    # Bidirectional embeddings, overrides and isolates reorder what follows them on screen.
    for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]:
        table[c] = f"\\u{c:04x}"
    return table


_KEEP_LINES = _inert_table("\n\t")
_ONE_LINE = _inert_table("")


def inert(text: str, *, multiline: bool = True) -> str:
    """`text` with its terminal control characters shown escaped (`ESC` -> `\\x1b`).

    Newlines and tabs are kept when `multiline` (a report, a log); a one-line field (a
    job name, a testid, a table cell) escapes them too. Backslashes are left alone.
    """
    return text.translate(_KEEP_LINES if multiline else _ONE_LINE)
