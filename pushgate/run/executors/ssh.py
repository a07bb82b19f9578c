"""Run steps on a remote host over SSH (asyncssh), with the local executor's contract.

- The host's key is checked against the configured known_hosts file: a host whose key is
  not there, or changed, is refused (never trusted on first use), and the step is broken
  with host_fault "bad" (the runner marks the host bad).
- A job's files go to the host before its first step there (one tar stream over the
  connection): its work dir with the checkouts, empty artifact and temporary dirs, and its
  buildjobs' artifacts. Paths in the step's environment and its cwd are mapped to their
  places on the host. `job_done` fetches back what the job keeps (its artifact globs, and
  its artifact dir), through tarfile's `data` filter (nothing lands outside the job's
  dirs), and removes the job's dir on the host.
- A step is `env -i` with exactly the environment the runner made (the allow-list), its
  output and errors in one stream, stamped into the step's log as it comes. The step's
  process is the leader of the process group sshd made for the session; at the step's end
  (exit, timeout, interruption) the group is killed, and so is every process that carries
  the step's marker (PUSHGATE_STEP_ID) in its environment, wherever its group.
- An unreachable host, or a connection lost during a step, breaks the step with host_fault
  "lost" (never `fail`): the runner counts it against the host and reruns the job.

The host needs a POSIX sh, GNU tar, find, grep and kill (any Debian has them).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import secrets
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from pushgate.config import HostConfig, Loaded
from pushgate.run.executors.base import JobFiles, Sandbox, StepOutcome, StepRun, stamp

KILL_GRACE_S = 2.0
# A wrapper's own failure before the step starts (no such cwd or command).
CANNOT_START = 254
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_MARK = "PUSHGATE_STEP_ID"


class HostFault(Exception):
    """The host failed us (unreachable, connection lost, key refused): the step is broken.

    kind: "lost", or "bad" when the host must not be used until a health check passes."""

    def __init__(self, message: str, kind: str = "lost"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach one ssh host (from hosts.<name> of the config)."""

    name: str
    address: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    remote_dir: str
    connect_timeout_s: float

    @classmethod
    def from_config(cls, name: str, h: HostConfig, base: Path) -> SshTarget:
        assert h.address and h.user and h.key_file and h.known_hosts
        return cls(
            name=name,
            address=h.address,
            port=h.port,
            user=h.user,
            key_file=str(base / os.path.expanduser(h.key_file)),
            known_hosts=str(base / os.path.expanduser(h.known_hosts)),
            remote_dir=h.remote_dir,
            connect_timeout_s=h.connect_timeout_s,
        )

    def where(self) -> str:
        return f"{self.user}@{self.address} port {self.port}"


@dataclass
class _RemoteJob:
    """A job's dir on its host and how local paths map to it."""

    host: str
    root: str
    # (local prefix, remote prefix), longest local first.
    paths: list[tuple[str, str]] = field(default_factory=list)
    broken: bool = False

    def map(self, value: str) -> str:
        for local, remote in self.paths:
            if value == local or value.startswith(local + "/"):
                return remote + value[len(local) :]
        return value


class SSHExecutor:
    """Steps on one ssh host (hosts.<host> of the config): one connection, shared by the
    jobs on the host, made again after it was lost."""

    name = "ssh"

    def __init__(self, loaded: Loaded, host: str):
        t = SshTarget.from_config(host, loaded.cfg.hosts[host], loaded.path.resolve().parent)
        self.hosts = {host: t}
        self.host = host
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._homes: dict[str, str] = {}
        self._jobs: dict[str, _RemoteJob] = {}

    def start(self) -> None:
        pass

    # --- connections -------------------------------------------------------------------

    async def _connect(self, host: str) -> asyncssh.SSHClientConnection:
        conn = self._conns.get(host)
        if conn is not None and not conn.is_closed():
            return conn
        lock = self._connecting.setdefault(host, asyncio.Lock())
        async with lock:
            conn = self._conns.get(host)
            if conn is not None and not conn.is_closed():
                return conn
            t = self.hosts[host]
            try:
                conn = await asyncssh.connect(
                    t.address,
                    port=t.port,
                    username=t.user,
                    client_keys=[t.key_file],
                    known_hosts=t.known_hosts,
                    # Nothing of the runner's own ssh setup: no agent, no ~/.ssh/config.
                    agent_path=None,
                    config=None,
                    password=None,
                    kbdint_auth=False,
                    connect_timeout=t.connect_timeout_s,
                    keepalive_interval=5,
                    keepalive_count_max=3,
                )
            except asyncssh.HostKeyNotVerifiable as e:
                raise HostFault(
                    f"host {host} ({t.where()}): its host key is not the one in "
                    f"{t.known_hosts} (changed, or never added): refused ({e.reason})",
                    "bad",
                ) from None
            except asyncssh.PermissionDenied as e:
                raise HostFault(
                    f"host {host} ({t.where()}): login refused with key {t.key_file}: {e.reason}"
                ) from None
            except (OSError, TimeoutError, asyncssh.Error) as e:
                raise HostFault(f"host {host} ({t.where()}) unreachable: {_why(e)}") from None
            self._conns[host] = conn
            return conn

    def _lost(self, host: str, e: BaseException) -> HostFault:
        conn = self._conns.pop(host, None)
        if conn is not None:
            conn.abort()
        return HostFault(f"connection to host {host} lost: {_why(e)}")

    async def _sh(
        self, host: str, command: str, *, stdin: Any = asyncssh.DEVNULL, stdout: Any = None
    ) -> asyncssh.SSHCompletedProcess:
        """Run a harness command on the host; HostFault if the host fails us."""
        conn = await self._connect(host)
        try:
            kw: dict[str, Any] = {"stdin": stdin, "check": False}
            if stdout is not None:
                kw["stdout"] = stdout
            return await conn.run(command, encoding=None, **kw)
        except (OSError, asyncssh.Error) as e:
            raise self._lost(host, e) from None

    async def _home(self, host: str) -> str:
        if host not in self._homes:
            res = await self._sh(host, "pwd")
            home = _text(res.stdout).strip()
            if res.exit_status != 0 or not home.startswith("/"):
                raise HostFault(f"host {host}: cannot find the home dir ({_text(res.stderr)})")
            self._homes[host] = home
        return self._homes[host]

    # --- a job's files -----------------------------------------------------------------

    async def _job(self, host: str, files: JobFiles) -> _RemoteJob:
        job = self._jobs.get(files.key)
        if job is not None:
            return job
        t = self.hosts[host]
        base = t.remote_dir
        if not base.startswith("/"):
            base = f"{await self._home(host)}/{base}"
        name = re.sub(r"[^A-Za-z0-9._+-]", "_", files.key)[:150]
        root = f"{base.rstrip('/')}/{name}.{secrets.token_hex(4)}"
        job = _RemoteJob(host, root)
        pairs = [
            (files.workdir, f"{root}/work"),
            (files.artifacts, f"{root}/artifacts"),
            (files.tmpdir, f"{root}/tmp"),
        ]
        pairs += [(d, f"{root}/in/{i}") for i, d in enumerate(files.inputs)]
        job.paths = sorted(pairs, key=lambda p: -len(p[0]))
        archive = await asyncio.to_thread(_pack, files)
        try:
            q = shlex.quote(root)
            res = await self._sh(
                host,
                f"mkdir -p -- {q} && tar -xf - -C {q}",
                stdin=archive,
            )
        finally:
            os.unlink(archive)
        if res.exit_status != 0:
            raise HostFault(
                f"host {host}: cannot unpack the job's files in {root}: "
                f"{_text(res.stderr).strip()[-500:]}"
            )
        self._jobs[files.key] = job
        return job

    async def job_done(self, files: JobFiles) -> str | None:
        job = self._jobs.pop(files.key, None)
        if job is None or job.broken:
            return None
        try:
            await self._fetch(job, files)
        except HostFault as e:
            return str(e)
        except (OSError, tarfile.TarError) as e:
            return f"cannot fetch the job's files from host {job.host}: {_why(e)}"
        finally:
            if not job.broken:
                try:
                    await self._sh(job.host, f"rm -rf -- {shlex.quote(job.root)}")
                except HostFault:
                    pass
        return None

    async def _fetch(self, job: _RemoteJob, files: JobFiles) -> None:
        """What the job keeps comes back: its artifact globs from its work dir, and its
        artifact dir whole."""
        names = ["artifacts"]
        if files.keep:
            q = shlex.quote(f"{job.root}/work")
            res = await self._sh(job.host, f"cd -- {q} && find . -mindepth 1 -print0")
            if res.exit_status != 0:
                raise HostFault(f"host {job.host}: cannot list the job's work dir")
            listed = [p[2:] for p in _text(res.stdout).split("\0") if p.startswith("./")]
            names += [f"work/{p}" for p in match_globs(listed, files.keep)]
        fd, archive = tempfile.mkstemp(prefix="pushgate-fetch-", suffix=".tar")
        os.close(fd)
        listing = _nul_list(names)
        try:
            res = await self._sh(
                job.host,
                f"cd -- {shlex.quote(job.root)} && tar -cf - --null -T -",
                stdin=listing,
                stdout=archive,
            )
            if res.exit_status != 0:
                raise HostFault(
                    f"host {job.host}: cannot pack the job's files: "
                    f"{_text(res.stderr).strip()[-500:]}"
                )
            await asyncio.to_thread(_unpack, archive, files)
        finally:
            os.unlink(archive)
            os.unlink(listing)

    # --- steps -------------------------------------------------------------------------

    async def run(self, req: StepRun) -> StepOutcome:
        host = self.host
        try:
            log = os.open(req.log, _LOG_FLAGS, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(req.log), exist_ok=True)
            log = os.open(req.log, _LOG_FLAGS, 0o644)
        try:
            return await self._run(req, host, log)
        finally:
            os.close(log)

    async def _run(self, req: StepRun, host: str, log: int) -> StepOutcome:
        job: _RemoteJob | None = None
        try:
            if req.files is not None:
                job = await self._job(host, req.files)
            conn = await self._connect(host)
        except HostFault as e:
            return self._fault(log, req, None, e)
        mapped = job.map if job is not None else (lambda v: v)
        cwd = mapped(str(req.cwd))
        env = {k: mapped(v) for k, v in req.env.items()}
        mark = secrets.token_hex(16)
        env[_MARK] = mark
        _log(log, f"[pushgate] run on {host}: {shlex.join(req.argv)} (cwd {cwd})")
        try:
            proc = await conn.create_process(
                _wrapper(req.argv, cwd, env),
                stdin=asyncssh.DEVNULL,
                stderr=asyncssh.STDOUT,
                encoding=None,
            )
        except (OSError, asyncssh.Error) as e:
            return self._fault(log, req, job, self._lost(host, e))
        out = _Output(log)
        reader = asyncio.create_task(out.pump(proc.stdout))
        try:
            await asyncio.wait_for(asyncio.shield(reader), req.timeout)
            await proc.wait_closed()
        except TimeoutError:
            await self._kill(host, out.pid, mark, grace=True)
            _log(log, f"[pushgate] timed out after {req.timeout:g}s; process group killed")
            reader.cancel()
            proc.close()
            return StepOutcome(proc.returncode, timed_out=True)
        except asyncio.CancelledError:
            await self._kill(host, out.pid, mark, grace=True)
            reader.cancel()
            proc.close()
            _log(log, "[pushgate] interrupted; process group killed")
            raise
        except (OSError, asyncssh.Error) as e:
            reader.cancel()
            return self._fault(log, req, job, self._lost(host, e))
        if out.error is not None:
            # Nothing from the host after the step's output: the connection went.
            return self._fault(log, req, job, self._lost(host, out.error))
        if out.write_error is not None:
            await self._kill(host, out.pid, mark, grace=False)
            raise out.write_error  # the runner makes the step broken with it
        code = proc.returncode
        if code is None or conn.is_closed():
            return self._fault(log, req, job, self._lost(host, ConnectionError("no exit status")))
        # Whatever the step left behind goes now, before the next step starts.
        try:
            await self._kill(host, out.pid, mark, grace=False)
        except HostFault as e:
            lost = HostFault(f"connection to host {host} lost at the step's end ({e})", e.kind)
            return self._fault(log, req, job, lost)
        if code == CANNOT_START and out.cannot_start:
            msg = out.cannot_start
            _log(log, f"[pushgate] {msg}")
            return StepOutcome(None, error=msg)
        _log(log, f"[pushgate] exit status {code}")
        return StepOutcome(code)

    def _fault(self, log: int, req: StepRun, job: _RemoteJob | None, e: HostFault) -> StepOutcome:
        if job is None and req.files is not None:
            job = self._jobs.get(req.files.key)
        if job is not None:
            job.broken = True  # nothing to fetch back from a host that failed
        _log(log, f"[pushgate] {e}; the step is broken (the host's fault, not the code's)")
        return StepOutcome(None, error=str(e), host_fault=e.kind)

    async def _kill(self, host: str, pid: int | None, mark: str, grace: bool) -> None:
        """Kill the step's process group and every process marked as the step's."""
        group = f"kill -{{sig}} -- -{pid} 2>/dev/null; " if pid else ""
        find = (
            f"p=$(grep -lsxzF {shlex.quote(f'{_MARK}={mark}')} /proc/[0-9]*/environ "
            "| sed -n 's,^/proc/\\([0-9]*\\)/environ$,\\1,p'); "
        )
        script = ""
        if grace:
            script += group.format(sig="TERM") + find + '[ -n "$p" ] && kill -TERM $p; '
            script += f"sleep {KILL_GRACE_S:g}; "
        script += group.format(sig="KILL")
        script += f"for i in 1 2 3 4 5; do {find}" + '[ -z "$p" ] && break; kill -KILL $p; done'
        res = await self._sh(host, script)
        if res.exit_status is None:
            raise HostFault(f"host {host}: could not kill the step's processes")

    async def release(self, sandbox: Sandbox) -> None:
        pass  # a remote job has no local sandbox; its files go at job_done

    async def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        for conn in self._conns.values():
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (TimeoutError, OSError, asyncssh.Error):
                pass
        self._conns.clear()


class _Output:
    """The step's output into its log, stamped line by line as it comes. The first line
    is the wrapper's (the step's pid), and a wrapper that could not start the step says
    so on the next one."""

    def __init__(self, log: int):
        self.log = log
        self.partial = b""
        self.pid: int | None = None
        self.first = True
        self.cannot_start: str | None = None
        self.error: BaseException | None = None
        self.write_error: OSError | None = None

    async def pump(self, stream: asyncssh.SSHReader[bytes]) -> None:
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                self._write(data)
        except (OSError, asyncssh.Error) as e:
            self.error = e
        self._write(b"", final=True)

    def _write(self, data: bytes, final: bool = False) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = b"" if final else lines.pop()
        if final and lines and lines[-1] == b"":
            lines.pop()
        if self.pid is None and lines:
            head = lines.pop(0)
            if head.startswith(b"pushgate-pid "):
                self.pid = int(head.split()[1])
            else:
                lines.insert(0, head)
                self.pid = 0
        if self.first and lines and self.pid:
            self.first = False
            if lines[0].startswith(b"pushgate: cannot start"):
                self.cannot_start = lines[0][len(b"pushgate: ") :].decode(errors="replace")
        if lines and self.write_error is None:
            ts = (stamp() + " ").encode()
            try:
                os.write(self.log, b"".join(ts + line + b"\n" for line in lines))
            except OSError as e:
                self.write_error = e


def _wrapper(argv: list[str], cwd: str, env: dict[str, str]) -> str:
    """The remote shell command of a step: report the pid (the process group's leader),
    check the step can start, then become it with exactly `env`."""
    q = shlex.quote
    path = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    assigns = " ".join(q(f"{k}={v}") for k, v in env.items())
    return (
        "exec 2>&1 </dev/null; echo pushgate-pid $$; "
        f"cd -- {q(cwd)} 2>/dev/null || "
        f"{{ echo {q(f'pushgate: cannot start {argv[0]!r}: no directory {cwd}')}; "
        f"exit {CANNOT_START}; }}; "
        f"(PATH={q(path)}; command -v -- {q(argv[0])}) >/dev/null 2>&1 || "
        f"{{ echo {q(f'pushgate: cannot start {argv[0]!r}: not found')}; "
        f"exit {CANNOT_START}; }}; "
        f"exec env -i -- {assigns} {shlex.join(argv)}"
    )


def _log(fd: int, line: str) -> None:
    os.write(fd, f"{stamp()} {line}\n".encode())


def _why(e: BaseException) -> str:
    if isinstance(e, asyncssh.DisconnectError):
        return e.reason or type(e).__name__
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _text(b: Any) -> str:
    if isinstance(b, bytes):
        return b.decode(errors="replace")
    return b or ""


def _nul_list(names: list[str]) -> str:
    """A file of NUL-separated names (tar -T - --null reads it on stdin)."""
    fd, path = tempfile.mkstemp(prefix="pushgate-names-")
    with os.fdopen(fd, "wb") as f:
        f.write(b"".join(n.encode() + b"\0" for n in names))
    return path


# --- archives ---------------------------------------------------------------------------------


def _pack(files: JobFiles) -> str:
    """A tar of the job's files as its host gets them: work/ (the checkouts, without the
    .git link of a worktree, which points into this machine's mirror), artifacts/, tmp/
    (HOME and TMPDIR) and in/<i>/ (its buildjobs' artifacts). Links are kept as links."""
    fd, path = tempfile.mkstemp(prefix="pushgate-send-", suffix=".tar")
    os.close(fd)
    work = Path(files.workdir)

    def no_git_link(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = ti.name.split("/")
        if len(parts) == 3 and parts[2] == ".git" and not ti.isdir():
            return None
        return ti

    with tarfile.open(path, "w") as tar:
        for d in ("work", "artifacts", "tmp", "in"):
            tar.addfile(_dir_info(d))
        if work.is_dir():
            for entry in sorted(os.listdir(work)):
                tar.add(work / entry, f"work/{entry}", filter=no_git_link)
        for i, d in enumerate(files.inputs):
            if os.path.isdir(d):
                tar.add(d, f"in/{i}")
    return path


def _dir_info(name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    return ti


def _unpack(archive: str, files: JobFiles) -> None:
    """Unpack what came back into the job's work and artifact dirs. The host ran code under
    test: nothing may land outside them (tarfile's data filter refuses absolute names,
    '..', links out, devices; such members are left out)."""
    stage = tempfile.mkdtemp(prefix="pushgate-fetched-")
    try:

        def safe(ti: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
            try:
                return tarfile.data_filter(ti, dest)
            except tarfile.FilterError:
                return None

        with tarfile.open(archive, "r") as tar:
            tar.extractall(stage, filter=safe)
        for sub, dest in (("work", files.workdir), ("artifacts", files.artifacts)):
            src = os.path.join(stage, sub)
            if os.path.isdir(src):
                shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --- globs over a remote listing --------------------------------------------------------------


def match_globs(paths: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The paths (relative, '/'-separated) that glob.glob(pattern, recursive=True) would
    find in a tree holding them: `*`, `?`, `[...]` within a name, `**` for any depth, and
    names starting with '.' only by a pattern starting with '.'."""
    pats = [[p for p in pat.split("/") if p not in ("", ".")] for pat in patterns]
    return [p for p in paths if any(_match(pp, p.split("/")) for pp in pats)]


def _match(pats: list[str], comps: list[str]) -> bool:
    if not pats:
        return not comps
    p = pats[0]
    if p == "**":
        for i in range(len(comps) + 1):
            if i and comps[i - 1].startswith("."):
                return False
            if _match(pats[1:], comps[i:]):
                return True
        return False
    if not comps or (comps[0].startswith(".") and not p.startswith(".")):
        return False
    return fnmatch.fnmatchcase(comps[0], p) and _match(pats[1:], comps[1:])


__all__ = ["HostFault", "SSHExecutor", "SshTarget", "match_globs"]
