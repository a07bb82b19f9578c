"""A job's sandbox on the local host: bubblewrap's arguments, and whether it can work here.

Why bubblewrap: it is the small, audited tool that desktop sandboxes (Flatpak) and
build systems rely on to make mount, PID, IPC and network namespaces, and it runs
on any Linux with namespaces, as root or (with unprivileged user namespaces) as
another user. A dedicated unprivileged user would keep steps from writing
pushgate's files but not from reading world-readable ones (the config, the
mirrors), from reaching a PostgreSQL with trust authentication, or from killing
each other; a hand-made set of namespaces would repeat bwrap's work with less
review. bwrap makes one sandbox a runner (base_argv); each job gets its own mount,
IPC, PID and network namespaces inside it from the spawner's zygote (spawner.py):
a bwrap a job would cost several times what a step of `true` costs the harness.

What a step sees: the whole file system read-only; an empty tmpfs over pushgate's
state dir, config dir, the runner's home, /run (daemon sockets: a PostgreSQL socket
with trust authentication is as good as a password) and every configured place of
pushgate's (logs, artifacts, mirrors, work dirs, the database, the mbox,
`runner.hide`), read-only; /dev/null over credential files; then its own work,
artifact and temporary dirs bound back read-write, its buildjobs' artifact dirs
read-only; its own /tmp, /dev/shm and /proc; its own PID and IPC namespaces and,
unless the job asks for the network, a network namespace with loopback only (one
of the runner's, lent to one job at a time).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from pushgate.run.executors.base import Sandbox

# Dirs whose tmpfs would take the system with it: a credential file that lives
# directly in one is hidden alone (/dev/null over it), not its dir.
SYSTEM_DIRS = frozenset(
    ["/", "/etc", "/usr", "/var", "/opt", "/srv", "/home", "/bin", "/sbin", "/lib", "/lib64"]
    + ["/mnt", "/media", "/dev", "/proc", "/sys", "/tmp"]
)


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _outermost(paths: list[str]) -> list[str]:
    """Paths without those inside another of them (a tmpfs over a parent hides the child)."""
    out: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


# Where the runner's sandbox sees, read-write, the host's places that a job's dirs may be
# in (HOST/0, HOST/1...), for the job agents to bind them from; each job's mount
# namespace unmounts them before any step runs.
HOST = "/run/pushgate-host"
# Each job has its own of these (empty tmpfs, see spawner.PRIVATE).
PRIVATE = ("/tmp", "/dev/shm")


def hidden_mounts(sb: Sandbox) -> list[str]:
    """The dirs an empty tmpfs hides in every job's sandbox (read-only in the jobs)."""
    return list(_hidden_mounts(sb.hidden))


@functools.lru_cache(maxsize=16)
def _hidden_mounts(hidden: tuple[str, ...]) -> tuple[str, ...]:
    out = ["/run"]
    if os.path.isdir("/var/run") and not os.path.islink("/var/run"):
        out.append("/var/run")
    return tuple(out + _outermost([h for h in hidden if h not in SYSTEM_DIRS]))


def _roots(sb: Sandbox) -> tuple[str, ...]:
    """The host's places a job's dirs are bound from: what the sandbox hides or has its
    own of (elsewhere a job's dir is in the sandbox's view as it is on the host)."""
    return tuple(_outermost([*hidden_mounts(sb), *PRIVATE]))


def base_argv(sb: Sandbox) -> list[str]:
    """bwrap's command line for a runner's sandbox, up to its command: what every job of
    the runner shares (the spawner's zygote joins it and makes each job's own namespaces
    in it, see spawner.py): the root read-only, /dev, a /proc, tmpfs over pushgate's
    places, /dev/null over its credential files, and the roots under HOST."""
    return list(_base_argv(sb.hidden, sb.hidden_files, sb.network))


@functools.lru_cache(maxsize=16)
def _base_argv(hidden: tuple[str, ...], files: tuple[str, ...], network: bool) -> tuple[str, ...]:
    bwrap = bwrap_path() or "bwrap"
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for d in _hidden_mounts(hidden):
        argv += ["--tmpfs", d]
    for f in files:
        argv += ["--ro-bind-try", "/dev/null", f]
    roots = _outermost([*_hidden_mounts(hidden), *PRIVATE])
    for i, r in enumerate(roots):
        argv += ["--bind-try", r, f"{HOST}/{i}"]
    # A pid namespace for the /proc above: a job's own /proc needs one that is fully
    # visible beside it when there is a user namespace (not root).
    argv.append("--unshare-pid")
    # Jobs off the network get a network namespace each, with loopback only, made by the
    # zygote in its own (which needs one of the sandbox's to come back to).
    return tuple(argv if network else [*argv, "--unshare-net"])


def job_spec(sb: Sandbox) -> tuple[list[tuple[str, str]], list[tuple[str, str]], bool, list[str]]:
    """What a job's namespaces add to its runner's sandbox: (dirs bound read-write, dirs
    bound read-only, each as (where the agent finds it, where the job sees it); whether
    it keeps the host's network; tmpfs made read-only). Real paths: a symlink would lead
    elsewhere in the sandbox than on the host."""
    roots = _roots(sb)

    def source(d: str) -> tuple[str, str]:
        d = _real(d)
        for i, r in enumerate(roots):
            if d == r or d.startswith(r.rstrip("/") + "/"):
                return f"{HOST}/{i}{d[len(r.rstrip('/')) :]}", d
        return d, d  # as it is in the sandbox's view

    return (
        [source(d) for d in sb.writable],
        [source(d) for d in sb.readonly],
        sb.network,
        hidden_mounts(sb),
    )


def _real(d: str) -> str:
    """realpath, its parent's cached (a job's own dir, made by the runner, is no link)."""
    parent, name = os.path.split(d.rstrip("/") or "/")
    if not name or name in (".", ".."):
        return os.path.realpath(d)
    real = _real_parent(parent)
    return real.rstrip("/") + "/" + name if not os.path.islink(d) else os.path.realpath(d)


@functools.lru_cache(maxsize=256)
def _real_parent(parent: str) -> str:
    return os.path.realpath(parent)


def probe(sb: Sandbox) -> str | None:
    """None if a sandbox like sb can be made here, else why not (one line)."""
    if bwrap_path() is None:
        return "bwrap (bubblewrap) is not installed"
    try:
        out = subprocess.run(
            [*base_argv(sb), "--unshare-net", "--unshare-ipc", "--", "/bin/true"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": os.defpath},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap cannot run: {e}"
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return f"bwrap cannot make a sandbox here: {lines[-1] if lines else out.returncode}"
    return None
