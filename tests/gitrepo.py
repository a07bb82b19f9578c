"""Build real git repositories for tests: commits with authors, dates, trailers, merges, tags.

Usage::

    repo = make_repo(tmp_path / "xen")
    c1 = repo.commit("first", files={"a.txt": "hello\\n"})
    repo.branch("side")                       # create and switch
    c2 = repo.commit("side work", author="Ann Other <ann@example.org>",
                     trailers=[("Signed-off-by", "Ann Other <ann@example.org>")])
    repo.checkout("main")
    m = repo.merge("side")                    # always a real merge commit (--no-ff)
    bare = repo.clone_bare(tmp_path / "xen.git")

Every call runs the git command line with the user's and the system's git config ignored, so
tests behave the same on every machine. Commit dates default to a deterministic clock that
advances one minute per commit, so `git log` order is predictable.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_AUTHOR = "A U Thor <author@example.com>"
DEFAULT_COMMITTER = "C O Mitter <committer@example.com>"
_EPOCH = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
_IDENT = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<email>[^<>]*)>$")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment that makes git ignore ~/.gitconfig and /etc/gitconfig."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    if extra:
        env.update(extra)
    return env


def run_git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run git in cwd; return stdout. Raise AssertionError with git's stderr on failure."""
    proc = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=git_env(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} in {cwd} failed: {proc.stderr.strip()}")
    return proc.stdout


def _split_ident(ident: str) -> tuple[str, str]:
    m = _IDENT.match(ident.strip())
    if not m:
        raise ValueError(f"identity must look like 'Name <email>': {ident!r}")
    return m["name"], m["email"]


class Repo:
    """A non-bare repository with a working tree, driven through the git command line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tick = 0

    def git(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        return run_git(self.path, *args, env=env)

    def rev(self, ref: str = "HEAD") -> str:
        """Full hash of ref (peeled to a commit)."""
        return self.git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()

    @property
    def head(self) -> str:
        return self.rev("HEAD")

    def _next_date(self) -> datetime:
        self._tick += 1
        return _EPOCH + timedelta(minutes=self._tick)

    def _ident_env(
        self, author: str, committer: str | None, date: datetime | str | None
    ) -> dict[str, str]:
        when = date if date is not None else self._next_date()
        stamp = when.isoformat() if isinstance(when, datetime) else when
        an, ae = _split_ident(author)
        cn, ce = _split_ident(committer or DEFAULT_COMMITTER)
        return {
            "GIT_AUTHOR_NAME": an,
            "GIT_AUTHOR_EMAIL": ae,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": cn,
            "GIT_COMMITTER_EMAIL": ce,
            "GIT_COMMITTER_DATE": stamp,
        }

    def write(self, files: Mapping[str, str | bytes | None]) -> None:
        """Write (or, for None, delete) files relative to the work tree and stage them."""
        for name, content in files.items():
            target = self.path / name
            if content is None:
                self.git("rm", "-q", "--", name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
            self.git("add", "--", name)

    def commit(
        self,
        msg: str,
        files: Mapping[str, str | bytes | None] | None = None,
        author: str = DEFAULT_AUTHOR,
        date: datetime | str | None = None,
        committer: str | None = None,
        trailers: list[tuple[str, str]] | None = None,
    ) -> str:
        """Commit the given file changes (empty commit if none); return the new hash.

        msg's first line is the subject; trailers are appended as a final paragraph.
        """
        if files:
            self.write(files)
        message = msg.rstrip("\n")
        if trailers:
            message += "\n\n" + "\n".join(f"{k}: {v}" for k, v in trailers)
        self.git(
            "commit",
            "-q",
            "--allow-empty",
            "--no-verify",
            "--cleanup=verbatim",
            "-m",
            message,
            env=self._ident_env(author, committer, date),
        )
        return self.head

    def branch(self, name: str, at: str | None = None, switch: bool = True) -> None:
        """Create branch name at `at` (default HEAD); switch to it unless switch=False."""
        if switch:
            self.git("checkout", "-q", "-b", name, *([at] if at else []))
        else:
            self.git("branch", name, *([at] if at else []))

    def checkout(self, ref: str) -> None:
        self.git("checkout", "-q", ref)

    def merge(
        self,
        other: str,
        msg: str | None = None,
        author: str = DEFAULT_AUTHOR,
        date: datetime | str | None = None,
        committer: str | None = None,
    ) -> str:
        """Merge `other` into the current branch with a real merge commit; return its hash."""
        self.git(
            "merge",
            "-q",
            "--no-ff",
            "--no-edit",
            "--no-verify",
            "-m",
            msg or f"Merge {other}",
            other,
            env=self._ident_env(author, committer, date),
        )
        return self.head

    def tag(self, name: str, rev: str = "HEAD", message: str | None = None) -> None:
        """Lightweight tag, or an annotated one when message is given."""
        if message is None:
            self.git("tag", name, rev)
        else:
            env = self._ident_env(DEFAULT_AUTHOR, None, None)
            self.git("tag", "-a", "-m", message, name, rev, env=env)

    def clone_bare(self, dest: Path) -> Path:
        """A bare clone of this repository (all branches and tags) at dest; return dest."""
        run_git(dest.parent, "clone", "-q", "--bare", "--", str(self.path), str(dest))
        return dest

    def push(self, remote: Path | str, refspec: str, force: bool = False) -> None:
        self.git("push", "-q", *(["--force"] if force else []), "--", str(remote), refspec)


def make_repo(path: Path, branch: str = "main") -> Repo:
    """Create an empty non-bare repository at path with initial branch `branch`."""
    path.mkdir(parents=True, exist_ok=True)
    run_git(path, "init", "-q", "-b", branch)
    return Repo(path)


def make_bare(path: Path, branch: str = "main") -> Path:
    """Create an empty bare repository at path; return path."""
    path.mkdir(parents=True, exist_ok=True)
    run_git(path, "init", "-q", "--bare", "-b", branch)
    return path


def remote_head(bare: Path, ref: str) -> str | None:
    """Hash of ref in a (bare) repository, or None when it does not exist."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", ref],
        cwd=bare,
        env=git_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None
