"""Credentials in tree URLs are never shown (redact_url, and git getting them from the
environment of its own process only) and untrusted text is inert on a terminal (inert)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pushgate import git as gitmod
from pushgate.git import GitError, Mirror
from pushgate.redact import inert, redact_url
from tests.gitrepo import make_repo
from tests.httpgit import serve_with_auth

TOKEN = "s3cr3t-T0KEN"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:" + TOKEN + "@host/r.git", "https://user:***@host/r.git"),
        ("https://" + TOKEN + "@host/r.git", "https://***@host/r.git"),
        ("HTTP://" + TOKEN + "@host/r.git", "HTTP://***@host/r.git"),
        ("ssh://git:" + TOKEN + "@host/r.git", "ssh://git:***@host/r.git"),
        # An unencoded '@' in the password leaves no tail behind.
        ("https://u:" + TOKEN + "@x@host/r@v1", "https://u:***@host/r@v1"),
        ("fatal: https://u:" + TOKEN + "@h/a and https://" + TOKEN + "@h/b", None),
        # No credentials: unchanged (ssh user names and scp-like URLs are not secrets).
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("git@host:r.git", "git@host:r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
        ("https://user:***@host/r.git", "https://user:***@host/r.git"),
    ],
)
def test_redact_url(text: str, shown: str | None) -> None:
    out = redact_url(text)
    assert TOKEN not in out
    if shown is not None:
        assert out == shown
    assert redact_url(out) == out


def test_inert_escapes_terminal_controls() -> None:
    hostile = "A \x1b]0;pwned\x07B\x1b[2J\rC\x9bD\x7fE\u202eF\x00"
    out = inert(hostile + "\n\tnext")
    assert out == ("A \\x1b]0;pwned\\x07B\\x1b[2J\\x0dC\\x9bD\\x7fE\\u202eF\\x00\n\tnext")
    assert inert("job\nname\t", multiline=False) == "job\\x0aname\\x09"
    # Ordinary text, including non-ASCII, is unchanged.
    assert inert("Jörg Müller <j@example.org> [x] \\x1b") == "Jörg Müller <j@example.org> [x] \\x1b"
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) < 0xA0 for c in inert(hostile))


# --- git over http with credentials ---------------------------------------------------------


@pytest.fixture
def http_repo(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A bare repository served over dumb HTTP that wants user:TOKEN; (url, head)."""
    work = make_repo(tmp_path / "work")
    head = work.commit("one", files={"a.txt": "1\n"})
    (tmp_path / "srv").mkdir()
    bare = work.clone_bare(tmp_path / "srv" / "r.git")
    with serve_with_auth(bare, "user", TOKEN) as url:
        yield url, head


def test_git_gets_credentials_off_its_command_line(
    tmp_path: Path, http_repo: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, head = http_repo
    argvs: list[list[str]] = []
    real_popen = subprocess.Popen

    def spy(cmd: list[str], *a: Any, **kw: Any) -> Any:
        argvs.append(list(cmd))
        return real_popen(cmd, *a, **kw)

    monkeypatch.setattr(gitmod.subprocess, "Popen", spy)
    m = Mirror(tmp_path / "m" / "r.git", url)
    m.ensure()
    m.fetch()
    assert m.resolve("main") == head
    assert argvs and not [a for a in argvs if any(TOKEN in x for x in a)]
    # No file of the mirror keeps it either (a checkout's `git remote -v` reads its config).
    for f in (tmp_path / "m").rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f


def test_wrong_credentials_fail_with_the_url_redacted(
    tmp_path: Path, http_repo: tuple[str, str]
) -> None:
    url, _ = http_repo
    with pytest.raises(GitError) as e:
        Mirror(tmp_path / "m" / "r.git", url.replace(TOKEN, TOKEN + "x")).ensure()
    assert TOKEN not in str(e.value) and "user:***@127.0.0.1" in str(e.value)
