"""What a step left running when it ended: found, named in its log, and killed.

A step ends when its command exits. Whatever it started is killed then, whatever its
session or its parent (a `setsid` or double-forked daemon too):

- cgroup v2 where the runner can make cgroups (root, or a delegated cgroup): each step
  gets one under `pushgate-PID` beside the runner's own. The spawner (or the job's
  sandbox agent) moves itself into it just to start the step and back, so the step and
  everything it forks are in it; at the step's end what is still there is named and
  killed at once (cgroup.kill), and the cgroup removed.
- Otherwise a sweep: unisolated, the spawner is a child subreaper, so a step's orphans
  become its children, and those carrying the step's marker (MARK in their
  environment) are killed with their descendants; in a job's sandbox the steps run in
  turn, so every process under the sandbox's pid 1 is the ended step's.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import time

MARK = "PUSHGATE_STEP_ID"
_NAME = "pushgate-"


def _own_cgroup_dir() -> str | None:
    """The runner's cgroup v2 directory, or None if there is no cgroup v2 here."""
    with open("/proc/self/cgroup") as f:
        own = next((line[3:].strip() for line in f if line.startswith("0::")), None)
    if own is None:
        return None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split(" ", 1)[0] == "cgroup2":
                mount = pre.split(" ")[4]
                path = mount + own if own != "/" else mount
                if os.path.exists(f"{path}/cgroup.procs"):
                    return path
    return None


class Cgroups:
    """The runner's step cgroups (None from make() if it cannot have them)."""

    def __init__(self, parent: str, base: str) -> None:
        self.base = base
        self.n = 0
        # Where the spawner and the agents go back to once a step is started.
        self.home = os.open(f"{parent}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        self.stale: list[str] = []

    @classmethod
    def make(cls) -> Cgroups | None:
        if os.environ.get("PUSHGATE_NO_CGROUP"):
            return None
        try:
            parent = _own_cgroup_dir()
            if parent is None or not os.access(f"{parent}/cgroup.procs", os.W_OK):
                return None
            _remove_stale(parent)
            base = f"{parent}/{_NAME}{os.getpid()}"
            os.makedirs(base, exist_ok=True)
            if not os.path.exists(f"{base}/cgroup.kill"):  # Linux before 5.14
                os.rmdir(base)
                return None
            return cls(parent, base)
        except OSError:
            return None

    def new(self) -> tuple[str, int]:
        """A step's cgroup and its cgroup.procs, open for the spawner to move into."""
        self.n += 1
        path = f"{self.base}/s{self.n}"
        os.mkdir(path)
        return path, os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def kill(self, path: str) -> list[tuple[int, str]]:
        """Kill what is in the step's cgroup and remove it; what was there."""
        try:
            with open(f"{path}/cgroup.procs") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            pids = []
        found = [(pid, command_of(pid)) for pid in pids]
        if pids:
            try:
                with open(f"{path}/cgroup.kill", "w") as f:
                    f.write("1")
            except OSError:
                for pid, _ in found:
                    _kill(pid)
        else:
            self.remove(path)
        return found

    def remove(self, path: str) -> None:
        try:
            os.rmdir(path)
        except OSError as e:
            if e.errno == errno.EBUSY:  # killed processes still exiting: removed later
                self.stale.append(path)
        if len(self.stale) > 16:
            self.stale = [p for p in self.stale if not _rmdir(p)]

    def close(self) -> None:
        for p in self.stale:
            _rmdir(p)
        self.stale = []
        _rmdir(self.base)
        os.close(self.home)


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _remove_stale(parent: str) -> None:
    """Step cgroups of runners that are gone (emptied by kill_orphans or by their end)."""
    for name in os.listdir(parent):
        if name.startswith(_NAME) and name[len(_NAME) :].isdigit():
            pid = int(name[len(_NAME) :])
            if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                d = f"{parent}/{name}"
                for sub in os.listdir(d):
                    if os.path.isdir(f"{d}/{sub}"):
                        _rmdir(f"{d}/{sub}")
                _rmdir(d)


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    """pid and its descendants, but zombies (killed already; the sandbox's pid 1 does not
    reap them)."""
    out = [pid] if _running(pid) else []
    for c in children(pid):
        out += _tree(c)
    return out


def _marked(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return mark in f.read().split(b"\0")
    except OSError:
        return False


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(200).rstrip(b"\0").replace(b"\0", b" ")
        if not argv:  # not exec'd yet, or a kernel thread: its name
            with open(f"/proc/{pid}/comm", "rb") as f:
                argv = f.read().strip()
    except OSError:
        return "?"
    return argv.decode(errors="replace")[:100] or "?"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def sweep(root: int, skip: set[int], mark: str | None) -> list[tuple[int, str]]:
    """Kill what the ended step left under `root` (the subreaper spawner, or the sandbox's
    pid 1): the children of root not in `skip`, if they carry `mark` (all if None), with
    their descendants; what was killed."""
    want = f"{MARK}={mark}".encode() if mark is not None else None
    found: list[tuple[int, str]] = []
    for pid in children(root):
        if pid in skip or (want is not None and not _marked(pid, want)):
            continue
        for p in _tree(pid):
            found.append((p, command_of(p)))
            _kill(p)
    return found


async def wait_gone(pids: list[int], cgroups: Cgroups | None, path: str | None) -> None:
    """Wait (2 s at most) until the killed processes have died: zombies or reaped; the
    step's cgroup, if it has one, removed once empty."""
    until = time.monotonic() + 2.0
    while True:
        if path is not None and cgroups is not None:
            if _rmdir(path):
                return
        elif all(not _running(p) for p in pids):
            return
        if time.monotonic() > until:
            if path is not None and cgroups is not None:
                cgroups.stale.append(path)
            return
        await asyncio.sleep(0.005)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def describe(found: list[tuple[int, str]]) -> str:
    """The log line's text for the processes killed."""
    shown = ", ".join(f"{pid} ({cmd})" for pid, cmd in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    return f"killed {len(found)} process(es) the step left running: {shown}{more}"
