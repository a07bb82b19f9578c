"""pushgate.toml: pydantic models, job matrix expansion, cross-checks.

Every error is a ConfigError whose text names the file, the line (when the
key can be found in the file) and the dotted key, on one line.
"""

from __future__ import annotations

import email.policy
import fnmatch
import itertools
import os
import re
import string
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pushgate.allow import AllowPatternError, parse_allow
from pushgate.errors import PushgateError
from pushgate.redact import redact_url

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
DEFAULT_CONFIG = "pushgate.toml"
# Longest name pushgate stores (trees, branches, jobs, hosts, runvars, blessings, who gave a
# block), and testid: the database columns hold 200 and 400; the README says so.
NAME_MAX = 100
TESTID_MAX = 200
# A mail domain (Message-IDs, addresses): dot-separated labels of letters, digits and '-'.
DOMAIN_RE = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


class ConfigError(PushgateError):
    """A config problem, located as precisely as we can."""

    def __init__(self, path: Path | str, key: str, message: str, line: int | None = None):
        self.path = str(path)
        self.key = key
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Runvars pushgate sets itself: the tuple under test and where it came from, what a job
# built, its prerequisite builds, its host and artifacts. Set in the config, one would make
# jobs test something else than the revision the gate then pushes.
_OWNED_RUNVAR = re.compile(
    r"^(tree_.*|revision_.*|built_revision_.*|.*buildjob|host|artifacts|isolation)$"
)
_OWNED_MSG = (
    "runvar {var!r} is set by pushgate (tree_*, revision_*, built_revision_*, *buildjob, "
    "host, artifacts, isolation) and cannot be set in the config"
)


def owned_runvar(name: str) -> bool:
    """True for the runvars pushgate owns, which the config may not set."""
    return _OWNED_RUNVAR.match(name) is not None


def check_name(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(f"invalid name {v!r} (letters, digits, '.', '_', '+', '-')")
    if len(v) > NAME_MAX:
        raise ValueError(f"name of {len(v)} characters (at most {NAME_MAX})")
    return v


def check_address(v: str) -> str:
    """One mail address (`a@example.org` or `Name <a@example.org>`), or ValueError."""
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError(f"invalid mail address {v!r}: control characters")
    try:
        header = email.policy.default.header_factory("To", v)
        addrs = header.addresses
    except Exception:  # noqa: BLE001 - the stdlib parser raises IndexError and others
        raise ValueError(f"invalid mail address {v!r}") from None
    if header.defects or len(addrs) != 1:
        raise ValueError(f"invalid mail address {v!r} (one address, as a@example.org)")
    if not addrs[0].username or not DOMAIN_RE.match(addrs[0].domain or ""):
        raise ValueError(f"invalid mail address {v!r} (one address, as a@example.org)")
    return v


# Git ref names (git check-ref-format --allow-onelevel, in Python: config is ground floor).
_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^/|/$|\.$|^-|(^|/)\.|\.lock(/|$)")


def check_ref_name(v: str) -> str:
    if not v or v == "@" or _REF_BAD.search(v):
        raise ValueError(f"invalid ref name {v!r} (see git check-ref-format)")
    return v


def _check_url(v: str, what: str) -> str:
    """A git URL: a path, file://, http(s)://, git://, ssh:// or scp-like user@host:path;
    never `transport::address` (git's ext:: runs commands) or option-like text."""
    if not v.strip():
        raise ValueError(f"empty {what}")
    if v.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError(f"invalid {what} {redact_url(v)!r}")
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)(://|::)", v)
    if m and (m.group(2) == "::" or m.group(1).lower() not in _URL_SCHEMES):
        raise ValueError(
            f"{what} scheme {m.group(1)!r} not supported (a path, "
            + ", ".join(f"{s}://" for s in sorted(_URL_SCHEMES))
            + ", or user@host:path)"
        )
    return v


_URL_SCHEMES = frozenset({"file", "git", "http", "https", "ssh"})


class TreeConfig(_Model):
    url: str
    input_ref: str = "master"
    tested_ref: str = "tested"
    # Where the tested ref is pushed; the input repository by default.
    push_url: str | None = None

    @field_validator("url", "push_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, "url")

    @field_validator("input_ref", "tested_ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        return check_ref_name(v)


class StepConfig(_Model):
    testid: str
    # An argument list, or a string run by /bin/sh -c (the config author's own text).
    command: list[str] | str = Field(min_length=1)
    timeout: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    # Runs even after a fatal failure (log capture), like osstest's `!` steps.
    always: bool = False
    # A non-fatal step (a probe) records its failure without failing the job.
    fatal: bool = True
    # Status of a failure of this step: the thing under test (fail) or the harness (broken).
    iffail: Literal["fail", "broken"] = "fail"
    # Run in the checkout of this tree instead of the job's artifact dir.
    cwd: str | None = None

    @field_validator("testid")
    @classmethod
    def _testid(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v) or not v.isprintable():
            raise ValueError(f"invalid testid {v!r} (no spaces or control characters)")
        if len(v) > TESTID_MAX:
            raise ValueError(f"testid of {len(v)} characters (at most {TESTID_MAX})")
        return v


class JobConfig(_Model):
    steps: list[StepConfig] = Field(min_length=1)
    # Prerequisite builds: runvar name (`buildjob`, `xenbuildjob`, ...) -> job name.
    buildjobs: dict[str, str] = Field(default_factory=dict)
    buildjob: str | None = None
    trees: list[str] | None = None
    artifacts: list[str] = Field(default_factory=list)
    hostflags: list[str] = Field(default_factory=list)
    runvars: dict[str, str] = Field(default_factory=dict)
    matrix: dict[str, list[str]] = Field(default_factory=dict)
    # Environment variables of its steps (over the host's `env`).
    env: dict[str, str] = Field(default_factory=dict)
    # Its steps share the host's network (else they have loopback only).
    network: bool = False

    def all_buildjobs(self) -> dict[str, str]:
        refs = dict(self.buildjobs)
        if self.buildjob:
            refs["buildjob"] = self.buildjob
        return refs


class BranchConfig(_Model):
    tree: str
    other_trees: list[str] = Field(default_factory=list)
    # Job names or fnmatch patterns; each must select at least one job.
    jobs: list[str] = Field(min_length=1)
    # Allow-list patterns, "<job> <testid>" (osstest §4.7).
    allow: list[str] = Field(default_factory=list)
    blessing: str = "real"
    push: bool = True
    schedule: str | None = None
    retest_max_fraction: float = Field(default=0.1, ge=0, le=1, allow_inf_nan=False)
    # Seconds to wait before testing the input tip again after its last flight did not push
    # (osstest tests the same tuple again at once: "Testing same since N ... k attempts").
    repeat_pause_s: float = Field(0.0, ge=0, allow_inf_nan=False)
    # Hand the regressions of a reported flight to the bisector (osstest §6.4).
    bisect: bool = True
    mail_to: list[str] = Field(default_factory=list)
    mail_cc: list[str] = Field(default_factory=list)
    mail_bcc: list[str] = Field(default_factory=list)
    bisect_mail_to: list[str] | None = None

    @field_validator("mail_to", "mail_cc", "mail_bcc", "bisect_mail_to")
    @classmethod
    def _addresses(cls, v: list[str] | None) -> list[str] | None:
        for a in v or []:
            check_address(a)
        return v

    @field_validator("blessing")
    @classmethod
    def _blessing(cls, v: str) -> str:
        return check_name(v)


class HostConfig(_Model):
    executor: Literal["local", "ssh"] = "local"
    # Jobs at once: the CPUs of this machine for a local host, 1 for an ssh host.
    slots: int = Field(default=1, ge=1, le=1024)
    flags: list[str] = Field(default_factory=list)
    # Environment variables of the steps run on this host.
    env: dict[str, str] = Field(default_factory=dict)
    # An ssh host (executor = "ssh"): where, as whom, with which key, and the file holding
    # its host key (checked: a host whose key is not there, or changed, is refused).
    address: str | None = None
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    # Where the jobs' files go on the host (relative: to the user's home).
    remote_dir: str = "pushgate-jobs"
    connect_timeout_s: float = Field(default=15.0, gt=0, le=3600, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _default_slots(cls, data: Any) -> Any:
        if isinstance(data, dict) and "slots" not in data:
            n = 1 if data.get("executor") == "ssh" else (os.cpu_count() or 1)
            data = {**data, "slots": n}
        return data


class StateConfig(_Model):
    dir: str = "state"
    database: str | None = None
    logs: str | None = None
    artifacts: str | None = None
    git: str | None = None
    worktrees: str | None = None


class RunnerConfig(_Model):
    broken_exit_code: int = Field(default=125, ge=1, le=255)
    # At least 0.1 s (a smaller one spins a core); the lease at least two heartbeats.
    heartbeat_s: float = Field(default=5.0, ge=0.1, allow_inf_nan=False)
    lease_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    # A job none of whose hosts can be had (no host has its flags, or they are bad, in
    # maintenance or held) waits this long, then ends `starved`; 0: at once.
    starve_after_s: float = Field(default=600.0, ge=0, allow_inf_nan=False)
    # "bwrap": each job's steps in a bubblewrap sandbox; "none": unisolated, and said so.
    isolation: Literal["bwrap", "none"] = "bwrap"
    # A step's log is cut to this many bytes: its head, a line saying what was dropped,
    # and its last MiB (lines are at most 64 KiB, stamped once a second).
    log_max_bytes: int = Field(default=1024**3, ge=1024**2, le=1024**4)
    # Dirs every step may read and write (a compiler cache); not pushgate's own.
    shared: list[str] = Field(default_factory=list)
    # More dirs steps must not see (credentials of your own), besides pushgate's.
    hide: list[str] = Field(default_factory=list)
    # A job whose host broke it (unreachable, connection lost) is rerun on another suitable
    # host, at most this many times; a host that broke this many jobs in a row goes `bad`
    # until the health-check job (a job of the config) passes on it.
    host_retries: int = Field(default=2, ge=0, le=100)
    host_bad_after: int = Field(default=3, ge=1, le=1000)
    health_check_job: str | None = None


class ReportConfig(_Model):
    logs_url: str = "file://{logs}"

    @field_validator("logs_url")
    @classmethod
    def _logs_url(cls, v: str) -> str:
        if not re.match(r"^(https?|file)://", v) or any(ord(c) < 32 for c in v):
            raise ValueError(f"logs_url {v!r} must start with http://, https:// or file://")
        return v


class MailConfig(_Model):
    mode: Literal["mbox", "smtp"] = "mbox"
    mbox: str | None = None
    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    from_addr: str = "pushgate@localhost"
    domain: str = "pushgate.invalid"

    @field_validator("from_addr")
    @classmethod
    def _from(cls, v: str) -> str:
        return check_address(v)

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not DOMAIN_RE.match(v):
            raise ValueError(f"invalid mail domain {v!r}")
        return v


class RetentionConfig(_Model):
    """What `pushgate gc` (and the daemon, every interval_h) deletes."""

    # A finished flight's logs and artifacts are kept keep_days after it finished, and
    # whatever their age for the last keep_flights flights of its branch.
    keep_days: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    keep_flights: int = Field(default=20, ge=0, le=1_000_000)
    # A finished job's work dir goes at the next gc, or failed_work_days after the job
    # finished when it did not pass (to look at what it left).
    failed_work_days: float = Field(default=3.0, ge=0, allow_inf_nan=False)
    # Hours between the daemon's runs of gc; 0: the daemon never runs it.
    interval_h: float = Field(default=24.0, ge=0, allow_inf_nan=False)


class Config(_Model):
    trees: dict[Annotated[str, Field()], TreeConfig]
    branches: dict[str, BranchConfig] = Field(default_factory=dict)
    jobs: dict[str, JobConfig]
    hosts: dict[str, HostConfig] = Field(default_factory=lambda: {"localhost": HostConfig()})
    state: StateConfig = Field(default_factory=StateConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    mail: MailConfig = Field(default_factory=MailConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)


class Loaded:
    """A validated config with its matrix expanded and paths resolved."""

    def __init__(self, path: Path, cfg: Config, jobs: dict[str, JobConfig]):
        self.path = path
        # Tree URLs may carry credentials (https://user:TOKEN@host/...): git gets them from
        # here alone (git_url, git_push_url); the config everything else reads, stores in
        # the database, puts in runvars and shows has them redacted.
        self._git_urls = {n: (t.url, t.push_url or t.url) for n, t in cfg.trees.items()}
        self.cfg = cfg.model_copy(
            update={
                "trees": {
                    n: t.model_copy(
                        update={
                            "url": redact_url(t.url),
                            "push_url": None if t.push_url is None else redact_url(t.push_url),
                        }
                    )
                    for n, t in cfg.trees.items()
                }
            }
        )
        self.jobs = jobs
        base = path.parent
        st = cfg.state
        self.state_dir = (base / st.dir).resolve()
        self.database_url = st.database or f"sqlite:///{self.state_dir / 'pushgate.db'}"
        if self.database_url.startswith("sqlite:///") and not self.database_url.startswith(
            "sqlite:////"
        ):
            rel = self.database_url[len("sqlite:///") :]
            self.database_url = f"sqlite:///{(base / rel).resolve()}"
        self.logs_dir = (base / (st.logs or str(self.state_dir / "logs"))).resolve()
        self.artifacts_dir = (base / (st.artifacts or str(self.state_dir / "artifacts"))).resolve()
        self.git_dir = (base / (st.git or str(self.state_dir / "git"))).resolve()
        self.worktrees_dir = (base / (st.worktrees or str(self.state_dir / "work"))).resolve()

    @property
    def trees(self) -> dict[str, TreeConfig]:
        """The trees, their URLs with credentials redacted."""
        return self.cfg.trees

    def git_url(self, tree: str) -> str:
        """The tree's URL as configured, credentials included: for git's command line
        only, never to be stored, logged or shown."""
        return self._git_urls[tree][0]

    def git_push_url(self, tree: str) -> str:
        """Where the tested ref is pushed (push_url, else url), credentials included."""
        return self._git_urls[tree][1]

    @property
    def branches(self) -> dict[str, BranchConfig]:
        return self.cfg.branches

    def branch(self, name: str) -> BranchConfig:
        try:
            return self.cfg.branches[name]
        except KeyError:
            known = ", ".join(sorted(self.cfg.branches)) or "none"
            raise ConfigError(
                self.path, f"branches.{name}", f"no such branch (known: {known})"
            ) from None

    def branch_jobs(self, name: str) -> list[str]:
        """The jobs of a branch, in config order."""
        return select_jobs(self.jobs, self.branch(name).jobs)

    def branch_trees(self, name: str) -> list[str]:
        b = self.branch(name)
        return [b.tree, *[t for t in b.other_trees if t != b.tree]]

    def job_trees(self, branch: str, job: str) -> list[str]:
        j = self.jobs[job]
        return j.trees if j.trees is not None else self.branch_trees(branch)


def select_jobs(jobs: dict[str, JobConfig], patterns: list[str]) -> list[str]:
    return [j for j in jobs if any(fnmatch.fnmatchcase(j, p) for p in patterns)]


def find_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line of a dotted key in TOML text (tomllib keeps no positions).

    Walk the table headers (counting `[[array]]` entries) and `key =` lines;
    return the line that matches the longest prefix of `loc`.
    """
    parts = [str(p) for p in loc]
    if not parts:
        return None
    header_re = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    key_re = re.compile(r'^\s*([A-Za-z0-9_."-]+?)\s*=')
    counters: dict[tuple[str, ...], int] = {}
    best: int | None = None
    best_depth = 0
    table: list[str] = []
    for no, line in enumerate(text.splitlines(), 1):
        m = header_re.match(line)
        if m:
            names = [p.strip().strip('"') for p in m.group(2).split(".")]
            if m.group(1) == "[[":
                counters[tuple(names)] = counters.get(tuple(names), -1) + 1
                names = names + [str(counters[tuple(names)])]
            table = names
            depth = _prefix_len(table, parts)
            if depth == len(table) and depth > best_depth:
                best, best_depth = no, depth
            continue
        m = key_re.match(line)
        if m and _prefix_len(table, parts) == len(table):
            keypath = table + [p.strip('"') for p in m.group(1).split(".")]
            depth = _prefix_len(keypath, parts)
            if depth > len(table) and depth > best_depth:
                best, best_depth = no, depth
    return best


def _prefix_len(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _expand_matrix(name: str, raw: dict[str, Any], path: Path, text: str) -> dict[str, Any]:
    """Expand `build-{arch}` with `matrix = {arch = [...]}` into concrete jobs."""
    matrix = raw.get("matrix") or {}
    fields = {f for _, f, _, _ in string.Formatter().parse(name) if f}
    if not matrix and not fields:
        return {name: raw}
    if set(matrix) != fields:
        raise ConfigError(
            path,
            f"jobs.{name}.matrix",
            f"matrix keys {sorted(matrix)} must match the name's placeholders {sorted(fields)}",
            find_line(text, ("jobs", name)),
        )
    for k in matrix:
        if owned_runvar(k):
            raise ConfigError(
                path,
                f"jobs.{name}.matrix.{k}",
                _OWNED_MSG.format(var=k),
                find_line(text, ("jobs", name, "matrix", k)),
            )
    keys = sorted(matrix)
    out: dict[str, Any] = {}
    for values in itertools.product(*(matrix[k] for k in keys)):
        subst = dict(zip(keys, values, strict=True))
        job = {k: v for k, v in raw.items() if k != "matrix"}
        job = _substitute(job, subst)
        runvars = dict(job.get("runvars", {}))
        for k, v in subst.items():
            runvars.setdefault(k, v)
        job["runvars"] = runvars
        out[name.format(**subst)] = job
    return out


def _substitute(value: Any, subst: dict[str, str]) -> Any:
    if isinstance(value, str):
        # Only replace known placeholders; leave other braces (shell ${x}) alone.
        for k, v in subst.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, list):
        return [_substitute(v, subst) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, subst) for k, v in value.items()}
    return value


def config_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("PUSHGATE_CONFIG")
    if env:
        return Path(env)
    return Path.cwd() / DEFAULT_CONFIG


def load(path: Path | str) -> Loaded:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "", "config file not found") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read config: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            path, "", f"not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})", line
        ) from None
    return parse(text, path)


def _find_nul(value: Any, loc: tuple[str, ...]) -> tuple[str, ...] | None:
    """The key path of the first NUL character in a key or string value, or None."""
    if isinstance(value, str):
        return loc if "\0" in value else None
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _find_nul(v, (*loc, str(i)))
            if found:
                return found
    if isinstance(value, dict):
        for k, v in value.items():
            if "\0" in k:
                return (*loc, k)
            found = _find_nul(v, (*loc, k))
            if found:
                return found
    return None


def parse(text: str, path: Path) -> Loaded:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(path, "", f"invalid TOML: {e}", int(m.group(1)) if m else None) from None
    nul = _find_nul(raw, ())
    if nul is not None:
        # A NUL cannot be passed to exec, the environment or most databases.
        shown = ".".join(p.replace("\0", "\\0") for p in nul)
        raise ConfigError(path, shown, "NUL character", find_line(text, nul))
    raw_jobs = raw.get("jobs")
    # Expanded matrix job -> the template it came from, to find its line.
    origins: dict[str, str] = {}
    if isinstance(raw_jobs, dict):
        expanded: dict[str, Any] = {}
        for name, job in raw_jobs.items():
            if not isinstance(job, dict):
                continue
            for jname, jraw in _expand_matrix(name, job, path, text).items():
                if jname in expanded:
                    raise ConfigError(
                        path, f"jobs.{jname}", "job defined twice", find_line(text, ("jobs", name))
                    )
                expanded[jname] = jraw
                origins[jname] = name
        raw = {**raw, "jobs": expanded}
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        # Matrix jobs are renamed; point at the template when the expanded name is absent.
        line = find_line(text, _template_loc(loc, origins))
        key = ".".join(str(p) for p in loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        raise ConfigError(path, key, msg, line) from None
    _cross_check(cfg, path, text, origins)
    return Loaded(path, cfg, dict(cfg.jobs))


def _template_loc(loc: tuple[Any, ...], origins: dict[str, str]) -> tuple[Any, ...]:
    if len(loc) >= 2 and loc[0] == "jobs" and loc[1] in origins:
        return ("jobs", origins[loc[1]], *loc[2:])
    return loc


def _cross_check(cfg: Config, path: Path, text: str, origins: dict[str, str]) -> None:
    def err(loc: tuple[str, ...], msg: str) -> ConfigError:
        return ConfigError(path, ".".join(loc), msg, find_line(text, _template_loc(loc, origins)))

    for name in [*cfg.trees, *cfg.jobs, *cfg.branches, *cfg.hosts]:
        try:
            check_name(name)
        except ValueError as e:
            raise err((name,), str(e)) from None
    for tname, tree in cfg.trees.items():
        if not tree.url.strip():
            raise err(("trees", tname, "url"), "empty url")
    _check_isolation(cfg, path, err)
    _check_hosts(cfg, path, err)
    if cfg.state.database is not None:
        try:
            check_database_url(cfg.state.database)
        except ValueError as e:
            raise err(("state", "database"), str(e)) from None
    rc = cfg.runner
    if rc.lease_s < 2 * rc.heartbeat_s:
        raise err(
            ("runner", "lease_s"),
            f"must be at least twice heartbeat_s ({rc.lease_s:g} < 2 x {rc.heartbeat_s:g})",
        )
    if cfg.mail.password_env and cfg.mail.password_file:
        raise err(("mail", "password_file"), "give only one of password_env and password_file")
    for jname, job in cfg.jobs.items():
        for var in job.runvars:
            if owned_runvar(var):
                raise err(("jobs", jname, "runvars", var), _OWNED_MSG.format(var=var))
            if not var or len(var) > NAME_MAX or not var.isprintable() or "=" in var:
                raise err(
                    ("jobs", jname, "runvars", var),
                    f"invalid runvar name (printable, no '=', at most {NAME_MAX} characters)",
                )
        for var, dep in job.all_buildjobs().items():
            if not re.fullmatch(r"(\w+_)?\w*buildjob", var):
                raise err(("jobs", jname, "buildjobs", var), "runvar name must end in 'buildjob'")
            if dep not in cfg.jobs:
                raise err(
                    ("jobs", jname, "buildjob" if var == "buildjob" else "buildjobs"),
                    f"buildjob {dep!r} does not exist",
                )
        for t in job.trees or []:
            if t not in cfg.trees:
                raise err(("jobs", jname, "trees"), f"tree {t!r} does not exist")
        for i, step in enumerate(job.steps):
            if step.cwd is not None and step.cwd not in cfg.trees:
                raise err(
                    ("jobs", jname, "steps", str(i), "cwd"), f"tree {step.cwd!r} does not exist"
                )
        testids = [s.testid for s in job.steps]
        dup = {t for t in testids if testids.count(t) > 1}
        if dup:
            raise err(("jobs", jname, "steps"), f"duplicate testid {sorted(dup)[0]!r}")
    cycle = _find_cycle({j: list(c.all_buildjobs().values()) for j, c in cfg.jobs.items()})
    if cycle:
        raise err(("jobs", cycle[0]), "buildjob cycle: " + " -> ".join(cycle))
    for bname, br in cfg.branches.items():
        for t in [br.tree, *br.other_trees]:
            if t not in cfg.trees:
                raise err(
                    ("branches", bname, "tree" if t == br.tree else "other_trees"),
                    f"tree {t!r} does not exist",
                )
        for pat in br.jobs:
            if not select_jobs(cfg.jobs, [pat]):
                raise err(("branches", bname, "jobs"), f"no job matches {pat!r}")
        try:
            parse_allow(br.allow)
        except AllowPatternError as e:
            raise err(("branches", bname, "allow"), str(e)) from None
        selected = set(select_jobs(cfg.jobs, br.jobs))
        for j in selected:
            for dep in cfg.jobs[j].all_buildjobs().values():
                if dep not in selected:
                    raise err(
                        ("branches", bname, "jobs"),
                        f"job {j!r} needs buildjob {dep!r}, which the branch does not run",
                    )
        if br.schedule:
            try:
                from croniter import croniter

                croniter(br.schedule)
            except (ValueError, KeyError) as e:
                raise err(
                    ("branches", bname, "schedule"), f"invalid cron expression: {e}"
                ) from None
        if not 0 <= br.retest_max_fraction <= 1:
            raise err(("branches", bname, "retest_max_fraction"), "must be between 0 and 1")


def check_database_url(url: str) -> str:
    """A database URL pushgate can use: sqlite:///PATH or postgresql://... (psycopg)."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+._-]*)://", url)
    scheme = m.group(1).lower() if m else None
    if scheme is None:
        raise ValueError("not a database URL (sqlite:///PATH or postgresql://USER@HOST/DB)")
    if scheme not in ("sqlite", "postgresql", "postgresql+psycopg"):
        raise ValueError(
            f"database {scheme!r} is not supported (sqlite:///PATH or postgresql://USER@HOST/DB)"
        )
    if scheme == "sqlite" and not url.startswith("sqlite:///"):
        raise ValueError("a SQLite URL is sqlite:///PATH (three slashes)")
    return url


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_isolation(cfg: Config, path: Path, err: Callable[..., ConfigError]) -> None:
    """`env` tables name plain variables, and `runner.shared` stays out of pushgate's dirs."""
    tables = [(("hosts", h, "env"), c.env) for h, c in cfg.hosts.items()]
    tables += [(("jobs", j, "env"), c.env) for j, c in cfg.jobs.items()]
    for loc, env in tables:
        for name, value in env.items():
            if not _ENV_NAME.match(name) or name.startswith("PUSHGATE_"):
                raise err(
                    (*loc, name),
                    "invalid variable name (letters, digits and '_'; PUSHGATE_* are pushgate's)",
                )
            if "\0" in value:
                raise err((*loc, name), "a NUL character cannot be in the environment")
    # Shared dirs stay out of the state dir (and do not hold it), and do not hold the
    # config's dir (a dir of its own inside that is fine: nothing of pushgate's is in it).
    base = path.resolve().parent
    state = (base / cfg.state.dir).resolve()
    for i, d in enumerate(cfg.runner.shared):
        p = (base / os.path.expanduser(d)).resolve()
        if p == state or state in p.parents or p in state.parents or p in (base, *base.parents):
            raise err(
                ("runner", "shared", str(i)),
                f"{d!r} overlaps pushgate's state dir or holds its config",
            )


_SSH_KEYS = ("address", "user", "key_file", "known_hosts")


def _check_hosts(cfg: Config, path: Path, err: Callable[..., ConfigError]) -> None:
    """An ssh host names its address, user, key and known_hosts, and the files are there
    with a key for the host (never trusted on first use); a local one names none of them."""
    base = path.resolve().parent
    hc = cfg.runner.health_check_job
    if hc is not None and hc not in cfg.jobs:
        raise err(("runner", "health_check_job"), f"job {hc!r} does not exist")
    if hc is not None and (cfg.jobs[hc].buildjob or cfg.jobs[hc].buildjobs):
        raise err(("runner", "health_check_job"), f"job {hc!r} runs alone: no buildjob")
    for name, h in cfg.hosts.items():
        if h.executor != "ssh":
            for k in (*_SSH_KEYS, "remote_dir"):
                if k in h.model_fields_set:
                    raise err(("hosts", name, k), 'only for an ssh host (executor = "ssh")')
            continue
        for k in _SSH_KEYS:
            v = getattr(h, k)
            if not v:
                raise err(("hosts", name, k), 'required for an ssh host (executor = "ssh")')
            if v.startswith("-") or not v.isprintable() or (k in ("address", "user") and " " in v):
                raise err(("hosts", name, k), f"invalid {k} {v!r}")
        if not h.remote_dir.strip() or not h.remote_dir.isprintable():
            raise err(("hosts", name, "remote_dir"), f"invalid remote_dir {h.remote_dir!r}")
        assert h.key_file and h.known_hosts and h.address
        for k in ("key_file", "known_hosts"):
            f = base / os.path.expanduser(getattr(h, k))
            if not os.access(f, os.R_OK) or not f.is_file():
                raise err(("hosts", name, k), f"cannot read {str(f)!r}")
        known = base / os.path.expanduser(h.known_hosts)
        if not _known_host(known, h.address, h.port):
            raise err(
                ("hosts", name, "known_hosts"),
                f"no key for {h.address} port {h.port} in {str(known)!r} (add the host's "
                "key, e.g. from ssh-keyscan checked against the host's own)",
            )


def _known_host(path: Path, address: str, port: int) -> bool:
    """Whether a known_hosts file holds a key for the host (as ssh looks it up)."""
    import asyncssh

    try:
        keys = asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError, asyncssh.Error):
        return False
    trusted, ca, *_ = keys.match(address, "", port)
    return bool(trusted or ca)


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in graph:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None
