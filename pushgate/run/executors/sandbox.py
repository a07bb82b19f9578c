"""A job's sandbox on the local host: bubblewrap's arguments, and whether it can work here.

Why bubblewrap: it is the small, audited tool that desktop sandboxes (Flatpak) and
build systems rely on to make mount, PID, IPC and network namespaces, and it runs
on any Linux with namespaces, as root or (with unprivileged user namespaces) as
another user. A dedicated unprivileged user would keep steps from writing
pushgate's files but not from reading world-readable ones (the config, the
mirrors), from reaching a PostgreSQL with trust authentication, or from killing
each other; a hand-made set of namespaces would repeat bwrap's work with less
review. The sandbox is made once a job, not once a step (see spawner.py): bwrap
costs a few milliseconds, steps of `true` a fraction of one.

What a step sees (bwrap_argv): the whole file system read-only; an empty tmpfs over
pushgate's state dir, config dir, the runner's home, /run (daemon sockets: a
PostgreSQL socket with trust authentication is as good as a password) and every
configured place of pushgate's (logs, artifacts, mirrors, work dirs, the database,
the mbox, `runner.hide`); /dev/null over credential files; then its own work,
artifact and temporary dirs bound back read-write, its buildjobs' artifact dirs
read-only; a private /tmp, /dev and /proc; its own PID and IPC namespaces
and, unless the job asks for the network, a network namespace with loopback only.
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


def bwrap_argv(sb: Sandbox) -> list[str]:
    """bwrap's command line for a job's sandbox, up to its command (which the
    spawner's agent adds with its own --info-fd, --as-pid-1 and --die-with-parent)."""
    bwrap = bwrap_path() or "bwrap"
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    hidden = ["/run"]
    if os.path.isdir("/var/run") and not os.path.islink("/var/run"):
        hidden.append("/var/run")
    hidden += _outermost([h for h in sb.hidden if h not in SYSTEM_DIRS])
    argv += ["--tmpfs", "/tmp"]
    for d in hidden:
        argv += ["--tmpfs", d]
    for f in sb.hidden_files:
        argv += ["--ro-bind-try", "/dev/null", f]
    for d in sb.writable:
        argv += ["--bind", d, d]
    for d in sb.readonly:
        argv += ["--ro-bind", d, d]
    # Read-only once the binds inside them are made: nothing written there could
    # even look as if it had reached pushgate's dirs.
    for d in hidden:
        argv += ["--remount-ro", d]
    # No UTS namespace: without capabilities a step cannot change the host name anyway.
    argv += ["--unshare-pid", "--unshare-ipc"]
    if not sb.network:
        argv.append("--unshare-net")
    elif os.path.realpath("/etc/resolv.conf").startswith("/run/"):
        # The host's resolver configuration lives under the hidden /run.
        target = os.path.realpath("/etc/resolv.conf")
        argv += ["--ro-bind-try", target, target]
    return argv


def probe(sb: Sandbox) -> str | None:
    """None if a sandbox like sb can be made here, else why not (one line)."""
    if bwrap_path() is None:
        return "bwrap (bubblewrap) is not installed"
    try:
        out = subprocess.run(
            [*bwrap_argv(sb), "--", "/bin/true"],
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
