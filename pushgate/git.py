"""Every git call pushgate makes: mirrors, ref resolution, logs, people touched, pushes.

All commands are argument lists; user-supplied refs go through check_ref() and are resolved to
full hashes before they reach a revision position, and `--` / `--end-of-options` close the option
list wherever git allows. git runs with the user's and system config ignored (a ~/.gitconfig must
not change log formats, hooks or signing) and with GIT_* variables from our caller dropped (a
stray GIT_DIR would redirect every command).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from pushgate.errors import PushgateError
from pushgate.redact import redact_url

NETWORK_TIMEOUT = 600.0  # seconds for clone/fetch/push/ls-remote
LOCAL_TIMEOUT = 300.0  # seconds for purely local commands
_HEX = re.compile(r"^[0-9a-fA-F]{4,40}$")
_FULL_HEX = re.compile(r"^[0-9a-f]{40}$")
# Conservative on purpose: git accepts ';', '$', quotes... in ref names; we never need them.
_REF_CHARS = re.compile(r"^[A-Za-z0-9._/+@-]+$")
# Environment variables of the caller that git may keep (ssh setup, TLS trust, proxies).
_KEEP_GIT_ENV = (
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_SSH_VARIANT",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "GIT_PROXY_COMMAND",
)
# Fixed output formats whatever the git defaults: the revision log is compared with osstest's.
_CONFIG = (
    "core.pager=cat",
    "color.ui=false",
    "log.showSignature=false",
    "log.decorate=false",
    "log.mailmap=false",
    "i18n.logOutputEncoding=UTF-8",
    "core.hooksPath=/dev/null",
    "core.quotePath=false",
    "gc.auto=0",
    "maintenance.auto=false",
)
PEOPLE_TRAILERS = ("signed-off-by", "tested-by", "acked-by", "committed-by", "from")
_PEOPLE_RE = re.compile(
    r"^(?:author:\s+(?P<a>.*)|    (?:" + "|".join(PEOPLE_TRAILERS) + r"):\s+(?P<t>.*))$",
    re.IGNORECASE,
)


class GitError(PushgateError):
    """A git operation failed; the message is one line naming the repository or ref."""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return redact_url(line.strip())
    return "(no message from git)"


def check_ref(ref: str) -> str:
    """Return ref if it is a safe ref name or hex revision; raise GitError otherwise.

    Refuses option-like text, control characters, revision syntax (`..`, `^`, `~`, `:`) and
    any name `git check-ref-format --allow-onelevel` refuses.
    """
    if not isinstance(ref, str) or not ref:
        raise GitError("empty ref name")
    if ref.startswith("-"):
        raise GitError(f"bad ref {ref!r}: must not start with '-'")
    if any(ord(c) < 32 or ord(c) == 127 for c in ref):
        raise GitError(f"bad ref {ref!r}: control characters")
    if _HEX.match(ref):
        return ref
    if not _REF_CHARS.match(ref):
        raise GitError(f"bad ref {ref!r}: characters outside [A-Za-z0-9._/+@-]")
    proc = subprocess.run(
        ["git", "check-ref-format", "--allow-onelevel", ref],
        env=git_env(),
        capture_output=True,
        check=False,
        timeout=LOCAL_TIMEOUT,
    )
    if proc.returncode != 0:
        raise GitError(f"bad ref {ref!r}: refused by git check-ref-format")
    return ref


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every git command runs with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEEP_GIT_ENV}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_ASKPASS="",
        SSH_ASKPASS="",
        LC_ALL="C",
    )
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


def run_git(
    args: Sequence[str],
    *,
    git_dir: Path | None = None,
    timeout: float = LOCAL_TIMEOUT,
    config: Sequence[str] = (),
    what: str = "git",
    env: Mapping[str, str] | None = None,
    own_group: bool = True,
    pass_fds: Sequence[int] = (),
) -> GitResult:
    """Run git with args (never through a shell); return its exit status and output.

    Runs in its own process group so a timeout also kills ssh/remote helpers git started.
    own_group=False keeps git in pushgate's process group instead, so that a kill of the
    group (a service manager's stop, Ctrl-C) stops git with pushgate; a timeout then
    kills git itself (its ssh or receive-pack helpers end when it does). `pass_fds` are
    inherited by git (a lock it must hold while it lives). `what` names the repository
    in timeout errors; `env` is added to git_env().
    """
    cmd = ["git"]
    for opt in (*_CONFIG, *config):
        cmd += ["-c", opt]
    if git_dir is not None:
        cmd.append(f"--git-dir={git_dir}")
    cmd += list(args)
    proc = subprocess.Popen(
        cmd,
        env=git_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=own_group,
        pass_fds=tuple(pass_fds),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if own_group:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        else:
            proc.kill()
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # a helper still holds the pipes
                proc.wait()
        raise GitError(f"{what}: git {args[0]} timed out after {timeout:g}s") from None
    return GitResult(
        proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )


# Environment variables that carry a URL's credentials to the helper below (git's own
# children see them; nothing else does: not the command line, not a config file).
_CRED_USER = "_PUSHGATE_GIT_USERNAME"
_CRED_PASS = "_PUSHGATE_GIT_PASSWORD"
_CRED_HELPER = (
    '!f() { test "$1" = get || return 0; '
    f'printf "username=%s\\npassword=%s\\n" "${_CRED_USER}" "${_CRED_PASS}"; }}; f'
)
# The authority's user info runs to its last '@' ([^/]* cannot pass the path's first '/').
_HTTP_USERINFO = re.compile(r"(?i)^(?P<scheme>https?://)(?P<info>[^/]*)@(?P<rest>.*)$")


@dataclass(frozen=True)
class Remote:
    """A repository URL as git is given it: credentials of an http(s) URL leave the URL
    (which may show up in `ps` and git's messages) for a credential helper fed from the
    environment of this git process only."""

    url: str
    config: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None

    @classmethod
    def of(cls, url: str) -> Remote:
        m = _HTTP_USERINFO.match(url)
        if m is None:
            return cls(url)
        user, _, password = m["info"].partition(":")
        return cls(
            m["scheme"] + m["rest"],
            ("credential.helper=", f"credential.helper={_CRED_HELPER}"),
            {_CRED_USER: unquote(user), _CRED_PASS: unquote(password)},
        )


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_date: datetime
    committer_name: str
    committer_email: str
    committer_date: datetime
    subject: str
    body: str  # the whole message after the subject line, trailers included
    trailers: tuple[tuple[str, str], ...] = ()

    @property
    def author(self) -> str:
        return f"{self.author_name} <{self.author_email}>"


@dataclass(frozen=True)
class RevisionGraph:
    """Commits that are ancestors-or-self of target and descendants-or-self of base.

    `parents` maps each commit to its parents inside the set (base maps to []), newest first
    in `git rev-list --date-order` order; `dates` holds committer dates (Unix seconds).
    `rewound` is true when base is not an ancestor of target: the graph is then the fake
    two-node history target -> base (osstest's rule).
    """

    parents: dict[str, list[str]]
    dates: dict[str, int]
    rewound: bool = False


@dataclass(frozen=True)
class PushResult:
    ok: bool
    output: str  # git's own text (To <url> / old..new new -> ref), for the report
    reason: str = "pushed"  # pushed | up-to-date | stale | not-fast-forward | rejected
    old: str | None = None
    new: str = ""


@dataclass
class Mirror:
    """A bare mirror (`git clone --mirror`) of one tree, kept in pushgate's state directory."""

    path: Path
    url: str
    name: str = ""
    network_timeout: float = NETWORK_TIMEOUT
    config: Sequence[str] = field(default_factory=tuple)  # extra `-c key=value`, e.g. credentials

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.name:
            self.name = self.path.name.removesuffix(".git")
        if not self.url or self.url.startswith("-"):
            raise GitError(f"tree {self.name}: bad url {self.url!r}")

    # -- plumbing -------------------------------------------------------------------------

    def _git(
        self,
        *args: str,
        network: bool = False,
        check: bool = True,
        remote: Remote | None = None,
        own_group: bool = True,
        pass_fds: Sequence[int] = (),
    ) -> GitResult:
        res = run_git(
            args,
            git_dir=self.path,
            config=(*self.config, *(remote.config if remote else ())),
            timeout=self.network_timeout if network else LOCAL_TIMEOUT,
            what=f"tree {self.name} ({redact_url(self.url)})",
            env=remote.env if remote else None,
            own_group=own_group,
            pass_fds=pass_fds,
        )
        if check and res.returncode != 0:
            raise GitError(f"tree {self.name}: git {args[0]} failed: {_first_line(res.stderr)}")
        return res

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for operations that rewrite the mirror's refs (fetch, clone)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextmanager
    def push_lock(self) -> Iterator[int]:
        """Held while git pushes from this mirror, and inherited by that git (yields the
        fd to pass it): a `git push` that outlives a killed pushgate keeps holding it, so
        the next look at the remote (remote_ref) waits until that push has ended and sees
        its outcome. Waits at most network_timeout, then raises GitError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".push.lock"), "a+b") as fh:
            deadline = time.monotonic() + self.network_timeout
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise GitError(
                            f"tree {self.name}: an earlier git push from this mirror is "
                            f"still running after {self.network_timeout:g}s"
                        ) from None
                    time.sleep(0.05)
            try:
                yield fh.fileno()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def exists(self) -> bool:
        return (self.path / "HEAD").is_file() and (self.path / "objects").is_dir()

    # -- fetching -------------------------------------------------------------------------

    def ensure(self) -> None:
        """Clone the mirror if it is absent. Clones to a temporary name, then renames, so a
        crash mid-clone never leaves a half mirror that looks complete."""
        with self.lock():
            if self.exists():
                return
            tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
            remote = Remote.of(self.url)
            try:
                res = run_git(
                    ["clone", "--mirror", "--quiet", "--", remote.url, str(tmp / "m")],
                    config=(*self.config, *remote.config),
                    timeout=self.network_timeout,
                    what=f"tree {self.name} ({redact_url(self.url)})",
                    env=remote.env,
                )
                if res.returncode != 0:
                    raise GitError(
                        f"cannot fetch tree {self.name} from {redact_url(self.url)}: "
                        f"{_first_line(res.stderr)}"
                    )
                # The clone's remote config is never used (fetch names the URL); keep
                # no credential in a file a checkout's `git remote -v` would show.
                run_git(["config", "remote.origin.url", redact_url(self.url)], git_dir=tmp / "m")
                os.rename(tmp / "m", self.path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def fetch(self) -> None:
        """Fetch every ref from url (the configured url, even if the mirror's own remote
        config says otherwise), pruning refs deleted upstream."""
        self.ensure()
        remote = Remote.of(self.url)
        with self.lock():
            res = self._git(
                "fetch",
                "--prune",
                "--force",
                "--quiet",
                "--no-write-fetch-head",
                "--",
                remote.url,
                "+refs/*:refs/*",
                network=True,
                check=False,
                remote=remote,
            )
        if res.returncode != 0:
            raise GitError(
                f"cannot fetch tree {self.name} from {redact_url(self.url)}: "
                f"{_first_line(res.stderr)}"
            )

    # -- reading --------------------------------------------------------------------------

    def _verify(self, spec: str) -> str | None:
        res = self._git(
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            f"{spec}^{{commit}}",
            check=False,
        )
        out = res.stdout.strip()
        return out if res.returncode == 0 and _FULL_HEX.match(out) else None

    def resolve(self, ref: str) -> str:
        """Full 40-hex commit hash of a branch name, refs/... name, tag or (short) hash.

        A plain name is looked up as a branch first, then a tag, then a hash prefix, so a
        tag never shadows the branch under test.
        """
        check_ref(ref)
        if ref.startswith("refs/"):
            candidates = [ref]
        else:
            candidates = [f"refs/heads/{ref}", f"refs/tags/{ref}"]
            if _HEX.match(ref):
                candidates.insert(0 if len(ref) == 40 else 2, ref.lower())
        for spec in candidates:
            sha = self._verify(spec)
            if sha:
                return sha
        raise GitError(f"tree {self.name}: {ref!r} does not resolve to a commit")

    def _rev(self, rev: str) -> str:
        return rev if _FULL_HEX.match(rev) else self.resolve(rev)

    def _range(self, base: str | None, target: str) -> list[str]:
        t = self._rev(target)
        return [t] if base is None else [f"^{self._rev(base)}", t]

    def has_commit(self, sha: str) -> bool:
        return _FULL_HEX.match(sha) is not None and self._verify(sha) is not None

    def is_ancestor(self, a: str, b: str) -> bool:
        """True if a is an ancestor of (or equal to) b."""
        res = self._git("merge-base", "--is-ancestor", self._rev(a), self._rev(b), check=False)
        if res.returncode not in (0, 1):
            raise GitError(f"tree {self.name}: merge-base failed: {_first_line(res.stderr)}")
        return res.returncode == 0

    def log_range(self, base: str | None, target: str) -> list[Commit]:
        """Commits in base..target, in plain `git log` order (newest first)."""
        fields = [
            "%H",
            "%P",
            "%an",
            "%ae",
            "%aI",
            "%cn",
            "%ce",
            "%cI",
            "%(trailers:only,unfold)",
            "%B",
        ]
        out = self._git(
            "log", "-z", "--format=" + "%x00".join(fields), *self._range(base, target), "--"
        ).stdout
        parts = out.split("\0")
        n = len(fields)
        commits = []
        for i in range(0, len(parts) - n + 1, n):
            sha, par, an, ae, ad, cn, ce, cd, trl, msg = parts[i : i + n]
            subject, _, body = msg.partition("\n")
            trailers = tuple(
                (k.strip(), v.strip())
                for k, sep, v in (line.partition(":") for line in trl.splitlines())
                if sep
            )
            commits.append(
                Commit(
                    sha,
                    tuple(par.split()),
                    an,
                    ae,
                    datetime.fromisoformat(ad),
                    cn,
                    ce,
                    datetime.fromisoformat(cd),
                    subject,
                    body.strip("\n"),
                    trailers,
                )
            )
        return commits

    def count_range(self, base: str | None, target: str) -> int:
        return int(self._git("rev-list", "--count", *self._range(base, target), "--").stdout)

    def revision_log(self, base: str | None, target: str) -> str:
        """Plain `git log base..target` in git's default format (no submodule descent)."""
        return self._git(
            "log", "--no-color", "--format=medium", *self._range(base, target), "--"
        ).stdout

    def revision_log_text(self, base: str | None, target: str, max_lines: int = 300) -> str:
        """The revision log as osstest prints it: the log if it has fewer than max_lines lines,
        else `(No revision log; it would be N lines long.)` (spec §5.10)."""
        text = self.revision_log(base, target)
        n = len(text.splitlines())
        if n >= max_lines:
            return f"(No revision log; it would be {n} lines long.)\n"
        return text

    def people_touched(self, base: str | None, target: str) -> list[str]:
        """osstest's "People who touched revisions under test" entries (spec §5.6)."""
        return people_from_log(self.revision_log(base, target))

    def parents_graph(self, base: str, target: str) -> RevisionGraph:
        """The revision graph between base and target, for the bisector (spec §7.4, §7.5)."""
        b, t = self._rev(base), self._rev(target)
        if not self.is_ancestor(b, t):
            return RevisionGraph({t: [b], b: []}, self._dates([b, t]), rewound=True)
        out = self._git(
            "rev-list",
            "--date-order",
            "--ancestry-path",
            "--parents",
            "--format=%ct",
            f"^{b}",
            t,
            "--",
        ).stdout
        raw: dict[str, list[str]] = {}
        dates: dict[str, int] = {}
        lines = out.splitlines()
        for head, ct in zip(lines[0::2], lines[1::2], strict=True):
            sha, *pars = head.removeprefix("commit ").split()
            raw[sha] = pars
            dates[sha] = int(ct)
        nodes = set(raw) | {b}
        parents = {sha: [p for p in pars if p in nodes] for sha, pars in raw.items()}
        parents[b] = []
        dates.update(self._dates([b]))
        return RevisionGraph(parents, dates)

    def _dates(self, shas: list[str]) -> dict[str, int]:
        out = self._git("show", "-s", "--format=%H %ct", *shas, "--").stdout
        return {sha: int(ct) for sha, ct in (line.split() for line in out.splitlines())}

    # -- worktrees ------------------------------------------------------------------------

    def worktree(self, rev: str, dest: Path) -> Path:
        """Check out exactly rev into dest (which must not exist or be empty), detached.

        `git worktree add --detach` writes the files straight from the object store in one
        process, gives the build a real .git (for `git describe`-style version stamps), and
        its HEAD keeps rev's objects alive while the build runs; remove_worktree undoes it.
        It costs about what copying the files costs (git archive | tar and a `--work-tree`
        checkout were no faster on 500 files). --force: reuse a dest whose earlier worktree
        was deleted without remove_worktree (git would call it "missing but registered").
        """
        sha = self._rev(rev)
        if dest.exists() and any(dest.iterdir()):
            raise GitError(f"tree {self.name}: worktree destination {dest} is not empty")
        # Serialised with other worktree and fetch operations on this mirror: concurrent
        # `worktree add` calls race for the same administrative name, and a `worktree prune`
        # can drop a registration that another add is still writing.
        with self.lock():
            self._git("worktree", "add", "--detach", "--force", "--quiet", "--", str(dest), sha)
        return dest

    def remove_worktree(self, dest: Path) -> None:
        """Remove a worktree made by worktree() (and its registration); idempotent."""
        with self.lock():
            if dest.exists():
                res = self._git(
                    "worktree", "remove", "--force", "--force", "--", str(dest), check=False
                )
                if res.returncode != 0:
                    shutil.rmtree(dest, ignore_errors=True)
            self._git("worktree", "prune")

    # -- pushing --------------------------------------------------------------------------

    def remote_ref(self, push_url: str, ref: str) -> str | None:
        """Hash of branch ref at push_url (ls-remote), or None if it does not exist.

        Waits first for a git push from this mirror that is still running (push_lock),
        even one left behind by a killed process, so the answer includes its outcome."""
        full = _branch_ref(ref)
        _check_url(push_url)
        remote = Remote.of(push_url)
        with self.push_lock():
            res = self._git(
                "ls-remote", "--", remote.url, full, network=True, check=False, remote=remote
            )
        if res.returncode != 0:
            raise GitError(
                f"tree {self.name}: cannot list {full} at {redact_url(push_url)}: "
                f"{_first_line(res.stderr)}"
            )
        for line in res.stdout.splitlines():
            sha, _, name = line.partition("\t")
            if name == full:
                return sha
        return None

    def push_with_lease(
        self, push_url: str, ref: str, new: str, expected_old: str | None
    ) -> PushResult:
        """Move branch ref at push_url from expected_old to new: fast-forward only, as a
        compare-and-swap (--force-with-lease). expected_old None means "ref must not exist".

        A refusal (lease lost, not a fast-forward, remote hook said no) is returned with
        ok=False; an unreachable remote or other failure raises GitError. git runs in
        pushgate's process group and holds push_lock() while it lives.
        """
        full = _branch_ref(ref)
        _check_url(push_url)
        remote = Remote.of(push_url)
        new_sha = self._rev(new)
        old_sha = None if expected_old is None else self._rev_or_hex(expected_old)
        if old_sha is not None:
            if not self.has_commit(old_sha):
                # The tested ref may live in another repository: fetch its objects (no ref is
                # written) so the ancestry check can run.
                res = self._git(
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--",
                    remote.url,
                    full,
                    network=True,
                    check=False,
                    remote=remote,
                )
                if res.returncode != 0 and "couldn't find remote ref" not in res.stderr:
                    raise GitError(
                        f"tree {self.name}: cannot push {full} to "
                        f"{redact_url(push_url)}: {_first_line(res.stderr)}"
                    )
            if not self.has_commit(old_sha):
                return PushResult(
                    False,
                    f"{full} at {redact_url(push_url)}: expected old "
                    f"revision {old_sha} is unknown here; not pushing.\n",
                    "stale",
                    old_sha,
                    new_sha,
                )
            if not self.is_ancestor(old_sha, new_sha):
                return PushResult(
                    False,
                    f"{new_sha} is not a fast-forward of {old_sha} ({full}); not pushing.\n",
                    "not-fast-forward",
                    old_sha,
                    new_sha,
                )
        lease = f"--force-with-lease={full}:{old_sha or ''}"
        # git stays in pushgate's process group (a kill of the group stops it too) and
        # holds the push lock while it lives (a push that outlives pushgate is waited for).
        with self.push_lock() as lock_fd:
            res = self._git(
                "push",
                lease,
                "--",
                remote.url,
                f"{new_sha}:{full}",
                network=True,
                check=False,
                remote=remote,
                own_group=False,
                pass_fds=(lock_fd,),
            )
        output = redact_url(res.stdout + res.stderr)
        if res.returncode == 0:
            reason = "up-to-date" if "Everything up-to-date" in output else "pushed"
            return PushResult(True, output, reason, old_sha, new_sha)
        if "stale info" in output or "fetch first" in output:
            return PushResult(False, output, "stale", old_sha, new_sha)
        if "[rejected]" in output or "[remote rejected]" in output:
            return PushResult(False, output, "rejected", old_sha, new_sha)
        raise GitError(
            f"tree {self.name}: cannot push {full} to {redact_url(push_url)}: "
            f"{_first_line(res.stderr)}"
        )

    def _rev_or_hex(self, rev: str) -> str:
        if _FULL_HEX.match(rev.lower()):
            return rev.lower()  # may be absent locally yet; push_with_lease fetches it
        return self.resolve(rev)


def _branch_ref(ref: str) -> str:
    check_ref(ref)
    full = ref if ref.startswith("refs/") else f"refs/heads/{ref}"
    check_ref(full)
    return full


def _check_url(url: str) -> None:
    if not url or url.startswith("-") or any(ord(c) < 32 for c in url):
        raise GitError(f"bad repository url {redact_url(url)!r}")


def people_from_log(log_text: str) -> list[str]:
    """Entries of `Author:` lines and four-space-indented Signed-off-by/Tested-by/Acked-by/
    Committed-by/From lines, deduplicated case-insensitively (last spelling wins) and sorted
    by the lower-cased entry in byte order (spec §5.6)."""
    seen: dict[str, str] = {}
    for line in log_text.splitlines():
        m = _PEOPLE_RE.match(line)
        if m:
            entry = (m["a"] if m["a"] is not None else m["t"]).rstrip()
            if entry:
                seen[entry.lower()] = entry
    return [seen[k] for k in sorted(seen, key=lambda s: s.encode("utf-8"))]
