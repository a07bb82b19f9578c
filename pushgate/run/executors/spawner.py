"""The spawner: a small helper process that starts and reaps a runner's step processes.

Why a helper: starting a process from the runner blocks its event loop until
the child has called exec (vfork), which on a busy machine is about as long
as a short step itself runs; and Popen costs as much Python again. The
helper takes both off the loop: the runner sends a request over a
SOCK_SEQPACKET socket (one message per request, the output pipe's write end
attached), the helper posix_spawns the command in a new session and answers
with its pid, and reports its exit status once it has reaped it.

Messages are marshal-encoded tuples (both ends are the same Python):
  runner -> helper: ("spawn", id, argv, executable, cwd, env) + the output fd, and
                    the step's cgroup.procs and the helper's own (see leftovers.py)
                    | ("sandbox", id, bwrap argv) + one socket (the job's)
  helper -> runner: ("pid", id, pid, in its cgroup) | ("error", id, errno, strerror)
                    | ("exit", pid, exit code, or -signal)
  agent -> runner:  ("ready", 0, the sandbox's pid 1) | ("error", 0, errno, strerror),
                    then as the helper

A job's sandbox (see sandbox.py): the helper forks an *agent* for the job, which
starts a bubblewrap sandbox holding nothing but `cat` as its pid 1, joins that
sandbox's namespaces, drops every privilege, and then serves the job's spawn
requests on the job's own socket exactly as the helper does. One bwrap a job,
not one a step: bwrap costs ~2.5 ms of namespace set-up and tear-down, several
times what a step of `true` costs the harness; joining costs ~0.2 ms, and a
fork of the helper no Python start-up. When the runner shuts the job's socket
the agent closes cat's stdin: pid 1 exits, the kernel kills whatever still
runs in the sandbox, and the agent exits once it has reaped it all.

The helper only uses the standard library (and imports little: its start-up
is on a flight's critical path) and is run with `python -I -S`;
it exits when the runner's end of the socket closes (the runner died or
closed it), leaving running steps alone: a later run finds and kills those
through their environment, as for steps of a runner that was killed.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import socket
import sys

MAX_MESSAGE = 1 << 20
DEVNULL = "/dev/null"
# The runner decides when steps stop: a Ctrl-C or a SIGTERM meant for it must
# not kill the helper and lose the exit statuses of the steps it started.
IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RESET_SIGNALS = (*IGNORED, signal.SIGPIPE, signal.SIGXFSZ)


def _send(sock: socket.socket, msg: tuple) -> None:
    sock.send(marshal.dumps(msg))


# Children whose exit nobody asked about (an agent's bwrap, the helper's agents).
_quiet: set[int] = set()
# The steps started, whose exits are reported (not the orphans a subreaper inherits).
_steps: set[int] = set()
_PR_SET_CHILD_SUBREAPER = 36
_subreaper = False
READY = b"\0pushgate-sandbox-ready\n"
# Namespaces joined, the mount namespace last (it changes what /proc/PID/ns means).
NAMESPACES = ("user", "ipc", "net", "pid", "mnt")
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


def _enter_sandbox(bwrap: list[str]) -> tuple[int, int]:
    """Start the job's sandbox, join it and drop every privilege; the holder's pid and
    the sandbox's pid 1 (as the host sees it)."""
    libc = _c()
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
    _quiet.add(holder)
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
    fds = []
    for ns in NAMESPACES:
        if os.readlink(f"/proc/{child}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
            fds.append((ns, os.open(f"/proc/{child}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)))
    for ns, fd in fds:
        _check(libc.setns(fd, 0), f"setns {ns}")
        os.close(fd)
    os.chdir("/")
    _check(libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS, 0, 0, 0), "securebits")
    cap = 0
    while libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if cap < 32:
        _check(-1, "dropping the capability bounding set")
    _check(libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0), "clearing ambient capabilities")
    import ctypes

    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    # in_w stays open (close-on-exec) for the agent's life: cat's stdin.
    return holder, child


def _agent(main: socket.socket, job: socket.socket, bwrap: list[str]) -> None:
    """The forked agent of one job: make and join its sandbox, then serve its steps."""
    try:
        main.close()
        signal.set_wakeup_fd(-1)
        try:
            holder, init = _enter_sandbox(bwrap)
        except OSError as e:
            _send(job, ("error", 0, e.errno or 0, e.strerror or str(e)))
            return
        _send(job, ("ready", 0, init))
        serve(job)
        # The runner is done with the job. Closing cat's stdin (our exit would too)
        # ends pid 1, and the kernel kills the rest; reap until bwrap is gone (steps
        # are our children, and pid 1 waits for them to be reaped).
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in range(3, 1024):
            if fd != job.fileno():
                try:
                    os.close(fd)
                except OSError:
                    pass
        while True:
            try:
                if os.waitpid(-1, 0)[0] == holder:
                    break
            except ChildProcessError:
                break
    finally:
        os._exit(0)


def _sandbox(main: socket.socket, msg: tuple, fd: int) -> None:
    _c()
    job = socket.socket(fileno=fd)
    pid = os.fork()
    if pid == 0:
        _agent(main, job, msg[2])
    _quiet.add(pid)
    job.close()


def _spawn(sock: socket.socket, msg: tuple, fds: list[int]) -> None:
    global _subreaper
    _, rid, argv, exe, cwd, env = msg
    fd = fds[0]
    moved = False
    if len(fds) == 3:
        # Into the step's cgroup just for the spawn: the step and all it forks stay there.
        try:
            os.write(fds[1], b"0")
            moved = True
        except OSError:
            pass
    elif not _subreaper:
        # No cgroup: the step's orphans become our children, for the runner's sweep.
        _subreaper = _c().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
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
        _send(sock, ("pid", rid, pid, moved))
    finally:
        if moved:
            try:
                os.write(fds[2], b"0")
            except OSError:
                pass
        for f in fds:
            os.close(f)


_FD_SPACE = socket.CMSG_SPACE(4 * 3)


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


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in _steps:
            _steps.discard(pid)
            _send(sock, ("exit", pid, os.waitstatus_to_exitcode(status)))
        else:
            _quiet.discard(pid)  # an agent, a bwrap, or a step's orphan


def serve(sock: socket.socket) -> None:
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    # A handler (not SIG_IGN, which would stop children from being waitable)
    # so that SIGCHLD writes to the wakeup pipe.
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    os.chdir("/")
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                _reap(sock)
                continue
            try:
                data, fds = _receive(sock)
            except InterruptedError:
                continue
            if not data:
                return  # the runner is gone
            msg = marshal.loads(data)
            if msg[0] == "spawn" and len(fds) in (1, 3):
                _spawn(sock, msg, fds)
            elif msg[0] == "sandbox" and len(fds) == 1:
                _sandbox(sock, msg, fds[0])
            else:
                for f in fds:
                    os.close(f)


if __name__ == "__main__":
    fd = int(sys.argv[1])
    # Passed to us inheritable: steps must not inherit it (a step holding it
    # would keep the runner from seeing this helper die).
    os.set_inheritable(fd, False)
    serve(socket.socket(fileno=fd))
