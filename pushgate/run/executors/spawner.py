"""The spawner: a small helper process that starts and reaps a runner's step processes.

Why a helper: starting a process from the runner blocks its event loop until
the child has called exec (vfork), which on a busy machine is about as long
as a short step itself runs; and Popen costs as much Python again. The
helper takes both off the loop: the runner sends a request over a
SOCK_SEQPACKET socket (one message per request, the output pipe's write end
attached), the helper posix_spawns the command in a new session and answers
with its pid, and reports its exit status once it has reaped it.

Messages are marshal-encoded tuples (both ends are the same Python):
  runner -> helper: ("spawn", id, argv, executable, cwd, env) + one fd
  helper -> runner: ("pid", id, pid) | ("error", id, errno, strerror)
                    | ("exit", pid, exit code, or -signal)

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


def _spawn(sock: socket.socket, msg: tuple, fd: int) -> None:
    _, rid, argv, exe, cwd, env = msg
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


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, ("exit", pid, os.waitstatus_to_exitcode(status)))


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
            if msg[0] == "spawn" and len(fds) == 1:
                _spawn(sock, msg, fds[0])
            else:
                for f in fds:
                    os.close(f)


if __name__ == "__main__":
    fd = int(sys.argv[1])
    # Passed to us inheritable: steps must not inherit it (a step holding it
    # would keep the runner from seeing this helper die).
    os.set_inheritable(fd, False)
    serve(socket.socket(fileno=fd))
