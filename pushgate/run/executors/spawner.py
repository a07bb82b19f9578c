"""The spawner: a small helper process that starts and reaps a runner's step processes.

Why a helper: starting a process from the runner blocks its event loop until
the child has called exec (vfork), which on a busy machine is about as long
as a short step itself runs; and Popen costs as much Python again. The
helper takes both off the loop: the runner sends a request over a
SOCK_SEQPACKET socket (one message per request, the output pipe's write end
attached), the helper posix_spawns the command in a new session and answers
with its pid, and reports its exit status once it has reaped it.

Messages are marshal-encoded tuples (both ends are the same Python):
  runner -> helper: ("spawn", id, argv, executable, cwd, env) + the output fd
                    | ("sandbox", 0, bwrap argv, host root's place, job spec) + the
                    job's socket | ("kill", 0, pgid, signal)
  helper -> runner: ("pid", id, pid) | ("error", id, errno, strerror)
                    | ("exit", pid, exit code or -signal, [(pid, command) killed])
  agent -> runner:  ("ready", 0) | ("error", 0, errno, strerror), then as the helper
  zygote -> agent:  ("job", 0, job spec) + the job's socket;  agent -> zygote: ("free",)

What a step leaves running dies when it ends: the helper is a child subreaper, so a
step's orphans (a `setsid` or double-forked daemon too) become its children; as it
reaps a step it kills those carrying the step's mark (MARK in their environment) with
their descendants, and names them in the exit message, for the step's log.

A job's sandbox (see sandbox.py) costs three processes a runner, and an agent for each
job running at once. The helper forks a process that starts the runner's sandbox (bwrap,
holding `cat` as its pid 1: the root read-only, pushgate's places hidden, the host's
root under HOST), joins it, and forks the *zygote* inside it. The zygote hands each job
to an idle *agent*, or forks a new one as the init of a new pid namespace. An agent
joins a network namespace of the zygote's (loopback only, lent to it for its life) and
makes a template mount namespace (its own /proc, /dev and pushgate's places read-only);
then for each job, a copy of it and an IPC namespace, both new, with the job's dirs
bound in from HOST (which it then unmounts), and its own /tmp and /dev/shm. It keeps
only CAP_SYS_ADMIN and CAP_SYS_CHROOT, which no exec passes on, is not dumpable, and
serves the job's steps on the job's own socket as the helper does. As their init it
inherits whatever a step leaves, and kills it all as it reaps the step. When the runner
shuts the job's socket, the agent kills everything left in its pid namespace, goes back
to its template (the job's mount namespace goes with it), tells the zygote it is free,
and closes the job's socket: the runner sees the job's end once nothing of it is left.

Why agents serve job after job: a Python process forked, a pid namespace, a /proc
and dropping privileges cost ~5 ms of CPU a job (measured), about as much as the
job's five `true` steps; a job's mount and IPC namespaces, ~1 ms. Why not one bwrap a
job: bwrap's new mount namespace with /dev and /proc, and a new network namespace,
cost ~7 ms of CPU a job (and a network namespace's clean-up runs behind in the kernel,
slowing what follows).

The helper, the zygote and the agents do without Python's collector (gc.freeze): in a
fork it would copy every page it scans.

The helper only uses the standard library (and imports little: its start-up
is on a flight's critical path) and is run with `python -I -S`. It exits when the
runner's end of the socket closes (the runner died or closed it), killing the
steps it started; each agent ends its job the same way, and exits when the zygote
is gone. Steps whose helper was killed outright are found by a later run through
their environment.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

MAX_MESSAGE = 1 << 20
DEVNULL = "/dev/null"
# The runner decides when steps stop: a Ctrl-C or a SIGTERM meant for it must
# not kill the helper and lose the exit statuses of the steps it started.
IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RESET_SIGNALS = (*IGNORED, signal.SIGPIPE, signal.SIGXFSZ)


def _send(sock: socket.socket, msg: tuple) -> None:
    sock.send(marshal.dumps(msg))


# The steps started, whose exits are reported (not the orphans a subreaper inherits).
_steps: set[int] = set()
_PR_SET_CHILD_SUBREAPER = 36
_subreaper = False
# The variable that marks an unisolated step's processes (what it leaves is ours as a
# subreaper, among other jobs' steps), and each running step's.
MARK = "PUSHGATE_STEP_ID"
_nmarks = 0
_marks: dict[int, bytes] = {}
# Whether we are a job's agent in its sandbox (the init of its pid namespace).
_in_sandbox = False
READY = b"\0pushgate-sandbox-ready\n"
_PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_CAP_AMBIENT, _PR_SET_NO_NEW_PRIVS = 24, 28, 47, 38
# SECBIT_NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE, each locked, and
# KEEP_CAPS_LOCKED: uid 0 gains no capability by exec or setuid ever again.
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
_libc = None


def _c():  # type: ignore[no-untyped-def]
    """libc through ctypes (Python 3.11 has no os.setns), loaded once in the helper
    so that agents, its forks, do not pay for the import."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _name(name: bytes) -> None:
    """What ps and top call this process (comm, 15 bytes at most)."""
    _c().prctl(15, name, 0, 0, 0)  # PR_SET_NAME


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _read_until(fd: int, want: bytes, timeout: float) -> bytes:
    """Read fd until its data ends with `want`, EOF or timeout; what was read."""
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while not data.endswith(want):
        if not poller.poll(int(timeout * 1000)):
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def _start_base(bwrap: list[str]) -> int:
    """Start a runner's sandbox (bwrap holding `cat`) and join its user and mount
    namespaces, keeping every privilege there, and its pid namespace for our children;
    bwrap's pid."""
    info_r, info_w = os.pipe2(os.O_CLOEXEC)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    argv = [*bwrap, "--info-fd", "3", "--as-pid-1", "--die-with-parent", "--", "/bin/cat"]
    try:
        holder = os.posix_spawn(
            argv[0],
            argv,
            {"PATH": "/usr/bin:/bin"},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, out_w, 2),
                (os.POSIX_SPAWN_DUP2, info_w, 3),
            ],
            setsid=True,
            setsigdef=RESET_SIGNALS,
        )
    except OSError as e:
        raise OSError(e.errno, f"cannot run {argv[0]}: {e.strerror}") from None
    finally:
        for fd in (in_r, out_w, info_w):
            os.close(fd)
    # cat echoes this once it runs: the sandbox is complete. bwrap's own complaint
    # (it writes to the same pipe) comes instead when it cannot make it.
    os.write(in_w, READY)
    said = _read_until(out_r, READY, 30)
    if not said.endswith(READY):
        why = said.decode(errors="replace").strip().splitlines()
        raise OSError(0, f"bwrap failed: {why[-1] if why else 'no answer'}")
    info = _read_until(info_r, b"}", 5).decode()
    os.close(info_r)
    os.close(out_r)
    try:
        child = int(info.split('"child-pid":', 1)[1].split(",", 1)[0].split("}", 1)[0])
    except (IndexError, ValueError):
        raise OSError(0, f"bwrap said no child pid: {info!r}") from None
    import fcntl

    libc = _c()
    fds = []
    # The user namespace that owns the sandbox's (not the child's own: run unprivileged,
    # bwrap moves it into one nested in that, where it can undo nothing); the mount
    # namespace last: it changes what /proc means.
    pid_ns = os.open(f"/proc/{child}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    owner = fcntl.ioctl(pid_ns, 0xB701)  # NS_GET_USERNS
    if os.readlink(f"/proc/self/fd/{owner}") != os.readlink("/proc/self/ns/user"):
        fds.append(("user", owner))
    else:
        os.close(owner)
    fds.append(("pid", pid_ns))
    # Its network namespace, when it has one: the zygote makes the jobs' in it, and comes
    # back to it.
    if os.readlink(f"/proc/{child}/ns/net") != os.readlink("/proc/self/ns/net"):
        fds.append(("net", os.open(f"/proc/{child}/ns/net", os.O_RDONLY | os.O_CLOEXEC)))
    fds.append(("mnt", os.open(f"/proc/{child}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)))
    for ns, fd in fds:
        _check(libc.setns(fd, 0), f"setns {ns}")
        os.close(fd)
    os.chdir("/")
    # in_w stays open (close-on-exec) for the sandbox's life: cat's stdin.
    return holder


# What an agent keeps to make each job's namespaces: in the sandbox's user namespace (the
# host's when pushgate runs as root), and never passed on by exec (see _limit_privileges).
_CAP_SYS_CHROOT, _CAP_SYS_ADMIN = 18, 21
_AGENT_CAPS = (1 << _CAP_SYS_CHROOT) | (1 << _CAP_SYS_ADMIN)


def _limit_privileges() -> None:
    """No capability after any exec, in any namespace: steps run without any. The agent
    itself keeps CAP_SYS_ADMIN and CAP_SYS_CHROOT (mount namespaces for its next jobs),
    out of its steps' reach: ptrace of a process with capabilities its tracer lacks, or of
    one not dumpable, needs CAP_SYS_PTRACE, which is gone."""
    libc = _c()
    _check(libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS, 0, 0, 0), "securebits")
    cap = 0
    while libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if cap < 32:
        _check(-1, "dropping the capability bounding set")
    _check(libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0), "clearing ambient capabilities")
    import ctypes

    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    # (effective, permitted, inheritable) for caps 0-31, then 32-63: none inheritable.
    data = (ctypes.c_uint32 * 6)(_AGENT_CAPS, _AGENT_CAPS, 0, 0, 0, 0)
    _check(libc.capset(header, data), "capset")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    # The job's steps share our uid: without this they could reach our socket to the
    # runner through /proc/1/fd.
    _check(libc.prctl(4, 0, 0, 0, 0), "not dumpable")  # PR_SET_DUMPABLE


_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWPID, _CLONE_NEWNET = 0x20000, 0x8000000, 0x20000000, 1 << 30
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_SLAVE = 4096, 16384, 1 << 19
# statvfs's f_flag bits that are a mount's own flags (the same values as MS_*).
_KEPT_FLAGS = 2 | 4 | 8 | 1024 | 2048 | 4096  # nosuid nodev noexec noatime nodiratime relatime
_MNT_DETACH = 2


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None) -> None:
    def enc(x: str | None) -> bytes | None:
        return None if x is None else x.encode()

    if _c().mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"mount on {dst}: {os.strerror(err)}")


def _read_only(path: str) -> None:
    flags = os.statvfs(path).f_flag & _KEPT_FLAGS
    _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags, None)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


# Each job has its own of these (empty tmpfs): what the runner's sandbox has there is
# covered, and a job's dirs there are made in its own.
PRIVATE = ("/tmp", "/dev/shm")


def _private(path: str) -> bool:
    return any(_under(path, p) for p in PRIVATE)


def _template(spec: tuple, net: int) -> int:
    """The agent's own namespaces, made once (it is the init of its new pid namespace
    already): join the network namespace `net` (-1: the sandbox's), and a mount namespace
    with its own /proc, /dev and pushgate's places read-only, from which each job's is
    copied; an fd of that one."""
    hidden = spec[3]
    libc = _c()
    if net >= 0:
        _check(libc.setns(net, _CLONE_NEWNET), "setns net")
        os.close(net)
    _check(libc.unshare(_CLONE_NEWNS), "unshare")
    # Nothing mounted here reaches the runner's sandbox, nor its other jobs.
    _mount(None, "/", None, _MS_REC | _MS_SLAVE, None)
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    # The runner's /dev is its jobs' (device nodes work on a read-only mount).
    _read_only("/dev")
    for h in hidden:
        if not _private(h):
            _read_only(h)
    return os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)


def _job_namespaces(host: str, spec: tuple, template: int) -> None:
    """A job's mount and IPC namespaces, new: a copy of the agent's template with the
    job's dirs bound in from `host` (the zygote made their mount points), its own /tmp
    and /dev/shm, and the host's places gone."""
    writable, readonly, _, _ = spec
    libc = _c()
    _check(libc.setns(template, _CLONE_NEWNS), "setns mnt")
    _check(libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC), "unshare")
    for d in PRIVATE:
        if os.path.isdir(d):
            _mount("tmpfs", d, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
    for src, d in [*writable, *readonly]:
        if _private(d):
            os.makedirs(d, exist_ok=True)
        if not os.path.isdir(src):
            raise OSError(2, f"cannot bind {d}: no such directory")
        _mount(src, d, None, _MS_BIND | _MS_REC, None)
        if src == d and (src, d) in writable:
            # In the sandbox's view as it is: bound from the read-only root, and so
            # read-only until remounted.
            flags = os.statvfs(d).f_flag & _KEPT_FLAGS
            _mount(None, d, None, _MS_REMOUNT | _MS_BIND | flags, None)
    for _, d in readonly:
        _read_only(d)
    for root in os.listdir(host):
        _check(libc.umount2(f"{host}/{root}".encode(), _MNT_DETACH), "unmounting the host's")
    if any(os.listdir(f"{host}/{root}") for root in os.listdir(host)):
        raise OSError(0, "the host's places are still in reach")


def _loopback_up() -> None:
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, req))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS, UP


def _agent(ctl: socket.socket, host: str, spec: tuple, net: int) -> None:
    """An agent, forked by the zygote as the init of a new pid namespace: make its
    namespaces, then serve the jobs the zygote hands it on `ctl`, one at a time, each in
    mount and IPC namespaces of its own. A job ends when the runner shuts its socket:
    everything left in the pid namespace is killed, the job's namespaces go, and the
    zygote hears ("free",). Its exit kills whatever still runs in its namespace."""
    try:
        signal.set_wakeup_fd(-1)
        _name(b"pushgate-agent")
        try:
            template = _template(spec, net)
            _limit_privileges()
        except OSError as e:
            _refuse_jobs(ctl, e.errno or 0, e.strerror or str(e))
            return
        except Exception as e:  # a bug of ours: said, not a silent death
            _refuse_jobs(ctl, 0, f"{type(e).__name__}: {e}")
            return
        global _in_sandbox
        _in_sandbox = True
        wake = _wake_pipe()
        while True:
            data, fds = _receive(ctl)
            if not data:
                return  # the zygote is gone
            if len(fds) != 1:
                for f in fds:
                    os.close(f)
                continue
            job = socket.socket(fileno=fds[0])
            try:
                _job_namespaces(host, marshal.loads(data)[2], template)
            except OSError as e:
                _send(job, ("error", 0, e.errno or 0, e.strerror or str(e)))
            except Exception as e:  # a bug of ours
                _send(job, ("error", 0, 0, f"{type(e).__name__}: {e}"))
                return
            else:
                _send(job, ("ready", 0))
                if not _one_line(serve, job, wake) or not _end_job():
                    return  # the kernel kills what is left as we exit
            # Back to the template: the job's mount namespace, with nothing left in it,
            # goes at once (its mount points may be removed then). The zygote hears it
            # before the runner sees the job's end, and so before its next job.
            _check(_c().setns(template, _CLONE_NEWNS), "setns mnt")
            _send(ctl, ("free",))
            job.close()
    finally:
        os._exit(0)


def _refuse_jobs(ctl: socket.socket, errno: int, why: str) -> None:
    """An agent that could not make its namespaces says why to the job it was made for."""
    data, fds = _receive(ctl)
    for f in fds:
        with socket.socket(fileno=f) as job:
            _send(job, ("error", 0, errno, why))


def _end_job(timeout: float = 5.0) -> bool:
    """Kill everything in our pid namespace but us, and reap it; False if something
    outlived the timeout (stuck in the kernel: the agent then exits, and its namespace
    with it)."""
    until = time.monotonic() + timeout
    while True:
        try:
            os.kill(-1, signal.SIGKILL)  # from a pid namespace's init: all of its own
        except ProcessLookupError:
            pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return True
        if time.monotonic() > until:
            return False
        time.sleep(0.001)


def _mount_points(spec: tuple) -> list[str]:
    """Make the mount points of a job's dirs that are missing from the runner's sandbox
    (inside its tmpfs over pushgate's places; a job makes those under its own /tmp); the
    dirs made. OSError naming the dir if one cannot be bound."""
    writable, readonly, _, _ = spec
    made: list[str] = []
    for _, d in [*writable, *readonly]:
        if _private(d):
            continue
        missing = []
        p = d
        while not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        for m in reversed(missing):
            try:
                os.mkdir(m)
            except OSError as e:
                raise OSError(e.errno, f"cannot bind {d}: {e.strerror}") from None
            made.append(m)
    return made


def _one_line(fn: Callable[..., None], *args: object) -> bool:
    """fn(*args); a bug of ours is one line on stderr, not a traceback (the process then
    ends: its job's steps are broken, the next job gets a new one). False after a bug."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        where = fn.__name__.strip("_")
        os.write(2, f"pushgate: sandbox {where}: {type(e).__name__}: {e}\n".encode())
        return False
    return True


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


class _Agent:
    """The zygote's record of one of its agents."""

    __slots__ = ("ctl", "key", "net", "made", "dirs")

    def __init__(self, ctl: socket.socket, key: bytes, net: int) -> None:
        self.ctl = ctl  # our end of its control socket: jobs out, ("free",) in
        self.key = key  # the template it was made with (network, places made read-only)
        self.net = net  # the network namespace lent to it for its life, or -1
        # Its job's mount points that the zygote made, and the dirs the job binds.
        self.made: list[str] = []
        self.dirs: list[str] = []


def _zygote(zsock: socket.socket, host: str) -> None:
    """Hand each job asked for to an idle agent, or to a new one forked as the init of a
    new pid namespace (the zygote's own is reset after each fork); make the mount points
    a job needs, and remove them once its namespaces are gone."""
    libc = _c()
    _name(b"pushgate-zygote")
    zygote = os.getpid()
    import gc

    gc.freeze()  # (disabled since the helper started; what came since, frozen too)
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    poller, wake_r, wake_w = _poller(zsock)
    agents: dict[int, _Agent] = {}
    by_ctl: dict[int, int] = {}  # control socket's fd -> agent's pid
    idle: dict[bytes, list[int]] = {}
    # Network namespaces for agents off the network, each lent to one agent for its life
    # (and so to one job at a time): one made and destroyed a job costs the kernel more
    # than the rest of the sandbox, and its clean-up runs behind, slowing what follows.
    own_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    nets: list[int] = []

    def job_gone(a: _Agent) -> None:
        """Its job's namespaces are gone: so are its mount points."""
        made, a.made, a.dirs = a.made, [], []
        unmade(made)

    def unmade(made: list[str]) -> None:
        """Remove mount points, but those another job binds (a job's new sandbox, after
        its agent was killed, binds the same dirs)."""
        used = [d for other in agents.values() for d in other.dirs]
        for m in reversed(made):
            if any(_under(d, m) for d in used):
                break
            try:
                os.rmdir(m)
            except OSError:
                break

    def fork_agent(spec: tuple, key: bytes, job: socket.socket) -> int:
        net = -1
        if not spec[2]:
            net = nets.pop() if nets else _new_net(own_net)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            _check(libc.unshare(_CLONE_NEWPID), "unshare pid")
            try:
                pid = os.fork()
            finally:
                # The next fork lands in our own pid namespace again.
                if os.getpid() == zygote:
                    _check(libc.setns(own_pid_ns, _CLONE_NEWPID), "setns back")
        except OSError:
            ours.close()
            theirs.close()
            if net >= 0:
                nets.append(net)
            raise
        if pid == 0:
            # Nothing of the zygote's, nor of the other agents'.
            for f in (wake_r, wake_w, own_pid_ns, own_net, *nets):
                os.close(f)
            # (The job's socket too: it comes over `theirs`, and a copy held for our
            # life would keep the runner from seeing the job's end.)
            for other in (zsock, ours, job, *(o.ctl for o in agents.values())):
                other.close()
            _agent(theirs, host, spec, net)
        theirs.close()
        agents[pid] = _Agent(ours, key, net)
        by_ctl[ours.fileno()] = pid
        poller.register(ours, select.POLLIN)
        return pid

    def forget(pid: int) -> None:
        a = agents.pop(pid, None)
        if a is None:
            return
        if by_ctl.pop(a.ctl.fileno(), None) is not None:
            poller.unregister(a.ctl)
        a.ctl.close()
        if pid in idle.get(a.key, []):
            idle[a.key].remove(pid)
        if a.net >= 0:  # its processes are gone: the next agent's, clean
            nets.append(a.net)
        job_gone(a)

    while True:
        # A new job last: an agent's ("free",) that came with it is heard first.
        for fd, _ in sorted(poller.poll(), key=lambda e: e[0] == zsock.fileno()):
            if fd == wake_r:
                _drain(wake_r)
                for pid, _ in _reaped():
                    forget(pid)
                continue
            if fd in by_ctl:
                pid = by_ctl[fd]
                a = agents[pid]
                try:
                    said = a.ctl.recv(64, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    said = b""
                if said:  # ("free",): its job has ended, its namespaces are gone
                    job_gone(a)
                    idle.setdefault(a.key, []).append(pid)
                else:  # exiting: forgotten once reaped
                    poller.unregister(a.ctl)
                    by_ctl.pop(fd)
                continue
            if fd != zsock.fileno():
                continue  # (an agent's forgotten since the poll)
            try:
                data, fds = _receive(zsock)
            except InterruptedError:
                continue
            if not data:
                return  # the helper is gone (our agents see their sockets close)
            if len(fds) != 1:
                for f in fds:
                    os.close(f)
                continue
            job = socket.socket(fileno=fds[0])
            spec = marshal.loads(data)[2]
            key = marshal.dumps((spec[2], spec[3]))
            made: list[str] = []
            try:
                made = _mount_points(spec)
                for attempt in (1, 2, 3):
                    free = idle.get(key)
                    pid = free.pop() if free else fork_agent(spec, key, job)
                    try:
                        socket.send_fds(agents[pid].ctl, [data], [job.fileno()])
                        break
                    except OSError as e:  # it died meanwhile: forgotten once reaped
                        if attempt == 3:
                            raise OSError(e.errno, f"no agent: {e.strerror}") from None
            except OSError as e:
                _send(job, ("error", 0, e.errno or 0, e.strerror or str(e)))
                job.close()
                unmade(made)
                if "setns" in (e.strerror or ""):
                    return  # our forks would land in the wrong place: another zygote
                continue
            agents[pid].made = made
            agents[pid].dirs = [d for _, d in [*spec[0], *spec[1]]]
            job.close()


def _new_net(own: int) -> int:
    """A new network namespace with its loopback up (the zygote goes back to its own)."""
    libc = _c()
    _check(libc.unshare(_CLONE_NEWNET), "unshare net")
    try:
        _loopback_up()
        return os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        _check(libc.setns(own, _CLONE_NEWNET), "setns net")


def _base(zsock: socket.socket, bwrap: list[str], host: str) -> None:
    """A runner's sandbox, forked from the helper: start it and join it, then fork the
    zygote inside it and wait (bwrap dies with us); once it cannot, say why to each job."""
    try:
        signal.set_wakeup_fd(-1)
        _name(b"pushgate-sandbox")
        try:
            holder = _start_base(bwrap)
        except OSError as e:
            while True:
                data, fds = _receive(zsock)
                if not data:
                    return
                for f in fds:
                    with socket.socket(fileno=f) as job:
                        _send(job, ("error", 0, e.errno or 0, e.strerror or str(e)))
                return  # the helper makes another for the next job
        zygote = os.fork()
        if zygote == 0:
            _one_line(_zygote, zsock, host)
            os._exit(0)
        zsock.close()
        while True:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            if pid == holder:  # the sandbox is gone, and its jobs with it
                os.kill(zygote, signal.SIGKILL)
                return
            if pid == zygote:
                return
    finally:
        os._exit(0)


# A runner's sandboxes (their bwrap command line -> its socket to the zygote).
_zygotes: dict[bytes, socket.socket] = {}


def _sandbox(main: socket.socket, msg: tuple, fd: int) -> None:
    """A job's sandbox: its request goes to the zygote of its runner's sandbox (made at
    the first), which forks the job's agent; the agent answers on the job's socket."""
    # Loaded once, before the forks, and before the sandbox hides where they live (the
    # interpreter may be under the home dir).
    _c()
    import fcntl  # noqa: F401
    import struct  # noqa: F401

    _, _, bwrap, host, spec = msg
    key = marshal.dumps(bwrap)
    try:
        for _attempt in (1, 2):
            z = _zygotes.get(key)
            if z is None:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                pid = os.fork()
                if pid == 0:
                    # Nothing of the helper's: the job's socket comes as the others do.
                    main.close()
                    ours.close()
                    os.close(fd)
                    for other in _zygotes.values():
                        other.close()
                    _base(theirs, bwrap, host)
                theirs.close()
                z = _zygotes[key] = ours
            try:
                socket.send_fds(z, [marshal.dumps(("job", 0, spec))], [fd])
                return
            except OSError:  # that zygote died: another
                z.close()
                del _zygotes[key]
    finally:
        os.close(fd)


def _sweep(mark: bytes | None = None) -> list[tuple[int, str]]:
    """Kill what an ended step left under us: the children we (a subreaper, or in a
    sandbox the init of the job's pid namespace) inherited from it, with their
    descendants, but for running steps; for the helper, only those carrying the step's
    mark. Again until a round finds nothing new (a process with SIGKILL pending forks no
    more, and what was forking is ours the next time round); then wait (2 s at most)
    until it is dead. What was killed: pid (in the sandbox) and command line."""
    found: list[tuple[int, str]] = []
    killed: set[int] = set()
    for _ in range(50):
        mine = [c for c in _children(os.getpid()) if c not in _steps]  # (1 in a sandbox)
        if mark is not None:
            mine = [c for c in mine if c in killed or _marked(c, mark)]
        new = [p for c in mine for p in _tree(c) if p not in killed]
        if not new:
            break
        for p in new:
            found.append((p, _command(p)))
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        killed.update(new)
    until = time.monotonic() + 2
    while killed and time.monotonic() < until:
        killed = {p for p in killed if _alive(p)}
        if killed:
            time.sleep(0.002)
    return found


def _marked(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return mark in f.read().split(b"\0")
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _tree(pid: int) -> list[int]:
    """pid and its descendants, but zombies (dead already)."""
    out = [pid] if _alive(pid) else []
    for c in _children(pid):
        out += _tree(c)
    return out


def _command(pid: int) -> str:
    try:
        argv = b""
        for _ in range(2):  # (empty for a moment while it execs)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read(200).rstrip(b"\0").replace(b"\0", b" ")
            if argv:
                break
            time.sleep(0.001)
        if not argv:  # a kernel thread, or a zombie: its name
            with open(f"/proc/{pid}/comm", "rb") as f:
                argv = f.read().strip()
    except OSError:
        return "?"
    return argv.decode(errors="replace")[:100] or "?"


def _spawn(sock: socket.socket, msg: tuple, fd: int) -> None:
    global _subreaper
    _, rid, argv, exe, cwd, env = msg
    mark = None
    if not _in_sandbox:
        # Unisolated: what the step leaves running becomes our child (a subreaper), and
        # is told from other jobs' by the mark in its environment.
        if not _subreaper:
            _subreaper = _c().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        global _nmarks
        _nmarks += 1
        mark = f"{MARK}={os.getpid()}.{_nmarks}"
        env = {**env, MARK: mark.split("=", 1)[1]}
    try:
        # Single-threaded, so changing directory for the spawn is safe here. Every
        # time, even to the same path: a job's rerun makes its directory anew.
        try:
            os.chdir(cwd)
        except OSError as e:
            raise OSError(e.errno, f"cannot enter {cwd}: {e.strerror}") from None
        pid = os.posix_spawn(
            exe,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, DEVNULL, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
            # What Popen's restore_signals does, and our own SIGINT/SIGTERM:
            # a step starts with the default handling of every signal.
            setsigdef=RESET_SIGNALS,
        )
    except OSError as e:
        _send(sock, ("error", rid, e.errno or 0, e.strerror or str(e)))
    else:
        _steps.add(pid)
        if mark is not None:
            _marks[pid] = mark.encode()
        _send(sock, ("pid", rid, pid))
    finally:
        os.close(fd)


_FD_SPACE = socket.CMSG_SPACE(4)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and the fds it carries, which steps must not inherit.

    Not socket.recv_fds: before Python 3.12 it drops its flags argument, so
    MSG_CMSG_CLOEXEC never reached the kernel and every step inherited a copy
    of its own output pipe.
    """
    data, ancdata, _, _ = sock.recvmsg(MAX_MESSAGE, _FD_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(payload) // 4
            fds += [int.from_bytes(payload[i * 4 : i * 4 + 4], sys.byteorder) for i in range(n)]
    return data, fds


def _reaped() -> Iterator[tuple[int, int]]:
    """The children that have ended, reaped: (pid, wait status)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def _reap(sock: socket.socket) -> None:
    for pid, status in _reaped():
        # (Not a step: a sandbox's process, or a step's orphan.)
        if pid in _steps:
            _steps.discard(pid)
            # The step ends with its command: what it left running goes now.
            killed = _sweep(_marks.pop(pid, None))
            _send(sock, ("exit", pid, os.waitstatus_to_exitcode(status), killed))


def _wake_pipe() -> tuple[int, int]:
    """A pipe that SIGCHLD wakes: its two ends."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    # A handler (not SIG_IGN, which would stop children from being waitable)
    # so that SIGCHLD writes to the wakeup pipe.
    signal.signal(signal.SIGCHLD, lambda *_: None)
    return wake_r, wake_w


def _poller(
    sock: socket.socket, wake: tuple[int, int] | None = None
) -> tuple[select.poll, int, int]:
    """A poll of sock and of a pipe that SIGCHLD wakes (new, or `wake`): (poll, the
    pipe's two ends)."""
    wake_r, wake_w = wake or _wake_pipe()
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    return poller, wake_r, wake_w


def serve(sock: socket.socket, wake: tuple[int, int] | None = None) -> None:
    poller, wake_r, _ = _poller(sock, wake)
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    os.chdir("/")
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                _drain(wake_r)
                _reap(sock)
                continue
            try:
                data, fds = _receive(sock)
            except InterruptedError:
                continue
            if not data:
                # The runner is done, or gone: what it started goes too (in a sandbox, as
                # its init exits).
                for pid in _steps:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                _steps.clear()
                if _subreaper:
                    _sweep()
                return
            msg = marshal.loads(data)
            if msg[0] == "spawn" and len(fds) == 1:
                _spawn(sock, msg, fds[0])
            elif msg[0] == "sandbox" and len(fds) == 1 and len(msg) == 5:
                _sandbox(sock, msg, fds[0])
            elif msg[0] == "kill" and not fds:
                # An agent's steps have pids of its namespace: the runner cannot kill them.
                try:
                    os.killpg(msg[2], msg[3])
                except OSError:
                    pass
            else:
                for f in fds:
                    os.close(f)


if __name__ == "__main__":
    # Agents and zygotes are forks of the helper: Python's collector writes to every
    # object it scans, which in a fork copies the pages it shares with us. The helper
    # makes no cycles, so it does without.
    import gc

    gc.disable()
    gc.freeze()
    fd = int(sys.argv[1])
    _name(b"pushgate-helper")
    # Passed to us inheritable: steps must not inherit it (a step holding it
    # would keep the runner from seeing this helper die).
    os.set_inheritable(fd, False)
    serve(socket.socket(fileno=fd))
