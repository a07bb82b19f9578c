"""Run steps on this machine: one process group per step, output timestamped to the log.

This is the hot path of a flight (a step of `true` should cost the harness well
under a millisecond): a step is one request to the spawner helper (see
spawner.py), one pipe watched by the event loop, one future, and a log
written with raw os calls.
"""

from __future__ import annotations

import asyncio
import marshal
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from pushgate.run.executors import spawner
from pushgate.run.executors.base import JobFiles, Sandbox, StepOutcome, StepRun, stamp
from pushgate.run.executors.sandbox import bwrap_argv

# Grace between SIGTERM and SIGKILL when a step times out or is cancelled.
KILL_GRACE_S = 2.0
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_orphans(runner: str, flight: int) -> int:
    """Kill the process groups of steps a dead runner left behind on this machine.

    Steps carry PUSHGATE_RUNNER and PUSHGATE_FLIGHT in their environment, so
    they are found in /proc without any write on the hot path.
    """
    want = {b"PUSHGATE_RUNNER=" + runner.encode(), b"PUSHGATE_FLIGHT=" + str(flight).encode()}
    groups = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
            if want <= env:
                groups.add(os.getpgid(int(entry)))
        except (OSError, ProcessLookupError):
            continue
    for g in groups:
        kill_group(g)
    return len(groups)


def _ts() -> bytes:
    """A log line's prefix, as bytes."""
    return (stamp() + " ").encode()


class SpawnerDied(RuntimeError):
    pass


class SpawnerClient:
    """The runner's end of the spawner helper: requests out, pids and exits in."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        """A new helper, or (sock) the agent of a job's sandbox behind that socket."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        # The agent's ("ready", 0) or its error; None for the helper.
        self.ready: asyncio.Future[None] | None = None
        self.gone: asyncio.Future[None] | None = None
        if sock is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with theirs:
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", spawner.__file__, str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    # Nothing of the runner's environment (its secrets) in the helper,
                    # nor in the agents it forks into the steps' sandboxes.
                    env={"PATH": os.defpath},
                )
            sock = ours
        else:
            loop = asyncio.get_running_loop()
            self.ready = loop.create_future()
            self.gone = loop.create_future()
        self.sock = sock
        self.next_id = 0
        self.spawns: dict[int, asyncio.Future[int]] = {}
        self.exit_callbacks: dict[int, Callable[[int | None], None]] = {}
        # Exits reported before anyone asked (a step that ended at once).
        self.exits: dict[int, int] = {}
        self.dead = False
        if self.ready is not None:
            self.attach(asyncio.get_running_loop())

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Receive the helper's messages on this loop (the helper may be started
        before there is one, so that its start-up overlaps the runner's)."""
        if self.loop is None and not self.dead:
            self.loop = loop
            # Reads never block (MSG_DONTWAIT); sends may, briefly, if the helper lags.
            loop.add_reader(self.sock.fileno(), self._receive)

    async def spawn(
        self, argv: list[str], exe: str | None, cwd: str, env: dict[str, str], out: int
    ) -> int:
        """Start argv with `out` as its stdout and stderr; its pid (OSError if it cannot)."""
        if self.dead:
            raise SpawnerDied("the spawner helper died")
        loop = asyncio.get_running_loop()
        self.attach(loop)
        rid = self.next_id = self.next_id + 1
        fut: asyncio.Future[int] = loop.create_future()
        self.spawns[rid] = fut
        try:
            socket.send_fds(self.sock, [marshal.dumps(("spawn", rid, argv, exe, cwd, env))], [out])
        except OSError as e:
            del self.spawns[rid]
            raise SpawnerDied(f"cannot reach the spawner helper: {e}") from None
        return await fut

    def sandbox(self, bwrap: list[str]) -> SpawnerClient:
        """Have the helper fork an agent that makes a sandbox with bwrap's arguments and
        starts steps inside it; its client (await .ready before spawning)."""
        if self.dead:
            raise SpawnerDied("the spawner helper died")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            try:
                msg = marshal.dumps(("sandbox", 0, bwrap))
                socket.send_fds(self.sock, [msg], [theirs.fileno()])
            except OSError as e:
                ours.close()
                raise SpawnerDied(f"cannot reach the spawner helper: {e}") from None
        return SpawnerClient(ours)

    async def shut(self, timeout: float = 10.0) -> None:
        """An agent's end: it kills what still runs in its sandbox, then exits."""
        if self.gone is not None and not self.dead:
            try:
                self.sock.shutdown(socket.SHUT_WR)
                await asyncio.wait_for(asyncio.shield(self.gone), timeout)
            except (OSError, TimeoutError):
                pass
        self.close()

    def on_exit(self, pid: int, callback: Callable[[int | None], None]) -> None:
        """Call callback(exit code, -signal if killed) once pid has been reaped,
        or callback(None) if the helper died first."""
        if pid in self.exits:
            callback(self.exits.pop(pid))
        elif self.dead:
            raise SpawnerDied("the spawner helper died")
        else:
            self.exit_callbacks[pid] = callback

    def forget(self, pid: int) -> None:
        self.exit_callbacks.pop(pid, None)
        self.exits.pop(pid, None)

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(spawner.MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._died()
                return
            msg = marshal.loads(data)
            kind = msg[0]
            if msg[1] == 0 and self.ready is not None and kind in ("ready", "error"):
                if not self.ready.done():
                    if kind == "ready":
                        self.ready.set_result(None)
                    else:
                        self.ready.set_exception(OSError(msg[2], msg[3]))
                continue
            if kind == "exit":
                _, pid, code = msg
                cb = self.exit_callbacks.pop(pid, None)
                if cb is None:
                    self.exits[pid] = code
                else:
                    cb(code)
                continue
            fut = self.spawns.pop(msg[1], None)
            if fut is None or fut.done():
                continue
            if kind == "pid":
                fut.set_result(msg[2])
            else:
                fut.set_exception(OSError(msg[2], msg[3]))

    def _died(self) -> None:
        """The helper is gone: whoever waits on it learns so (their steps break)."""
        if self.dead:
            return
        self.dead = True
        if self.loop is not None:
            self.loop.remove_reader(self.sock.fileno())
        err = SpawnerDied("the spawner helper died")
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(err)
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)
        for fut in self.spawns.values():
            if not fut.done():
                fut.set_exception(err)
        self.spawns.clear()
        for cb in self.exit_callbacks.values():
            cb(None)
        self.exit_callbacks.clear()

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            if self.loop is not None:
                self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.proc is None:
            return
        # The helper exits once it sees its socket close. Waited for on a pidfd:
        # Popen.wait(timeout) polls with sleeps, which cost a run ~15 ms.
        try:
            fd = os.pidfd_open(self.proc.pid)
        except ProcessLookupError:
            fd = -1
        if fd >= 0:
            try:
                if not select.select([fd], [], [], 5)[0]:
                    self.proc.kill()
            finally:
                os.close(fd)
        self.proc.wait()


class LocalExecutor:
    """Steps as processes on this machine, started and reaped by the spawner helper.

    Output is read from a non-blocking pipe on the event loop and the exit
    comes as a message from the helper: no watcher thread per child, no
    asyncio transport, no fork in the runner.
    """

    name = "local"

    def __init__(self) -> None:
        # argv[0] -> its path, per PATH: without it the child of every step
        # tries execve in each PATH directory in turn, while the helper waits.
        self._which: dict[tuple[str, str], str | None] = {}
        self._spawner: SpawnerClient | None = None
        # The agents of the jobs' sandboxes (one a job, made at its first step).
        self._sandboxes: dict[Sandbox, SpawnerClient] = {}

    def start(self) -> None:
        """Start the spawner helper now rather than at the first step."""
        if self._spawner is None:
            self._spawner = SpawnerClient()

    def _executable(self, argv0: str, env: dict[str, str]) -> str | None:
        if "/" in argv0:
            return None
        key = (argv0, env.get("PATH", os.defpath))
        if key not in self._which:
            self._which[key] = shutil.which(argv0, path=key[1])
        return self._which[key]

    def spawner(self) -> SpawnerClient:
        if self._spawner is None or self._spawner.dead:
            if self._spawner is not None:
                self._spawner.close()
            self._spawner = SpawnerClient()
        return self._spawner

    async def _client(self, sandbox: Sandbox | None) -> SpawnerClient:
        """Who starts the step: the helper, or the agent of the job's sandbox."""
        if sandbox is None:
            return self.spawner()
        client = self._sandboxes.get(sandbox)
        if client is None:
            client = self._sandboxes[sandbox] = self.spawner().sandbox(bwrap_argv(sandbox))
            assert client.ready is not None
            try:
                await client.ready
            except OSError as e:
                raise OSError(e.errno, f"cannot make the job's sandbox: {e.strerror}") from None
        elif client.dead:
            raise SpawnerDied("the job's sandbox is gone")
        return client

    async def _spawn(self, req: StepRun, out: int) -> tuple[SpawnerClient, int]:
        argv0 = req.argv[0]
        exe = self._executable(argv0, req.env)
        client = await self._client(req.sandbox)
        try:
            pid = await client.spawn(req.argv, exe or argv0, str(req.cwd), req.env, out)
        except FileNotFoundError:
            if exe is None:
                raise
            # The binary found earlier may be gone: search PATH afresh, once (not
            # recursively: a missing cwd fails with the same error every time).
            self._which.clear()
            exe = self._executable(argv0, req.env)
            pid = await client.spawn(req.argv, exe or argv0, str(req.cwd), req.env, out)
        return client, pid

    async def release(self, sandbox: Sandbox) -> None:
        client = self._sandboxes.pop(sandbox, None)
        if client is not None:
            await client.shut()

    async def run(self, req: StepRun) -> StepOutcome:
        loop = asyncio.get_running_loop()
        try:
            log = os.open(req.log, _LOG_FLAGS, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(req.log), exist_ok=True)
            log = os.open(req.log, _LOG_FLAGS, 0o644)
        try:
            os.write(
                log,
                _ts() + f"[pushgate] run: {shlex.join(req.argv)} (cwd {req.cwd})\n".encode(),
            )
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            try:
                client, pid = await self._spawn(req, out_w)
            except (SpawnerDied, OSError) as e:
                os.close(out_r)
                why = e.strerror if isinstance(e, OSError) else e
                msg = f"cannot start {req.argv[0]!r}: {why}"
                os.write(log, _ts() + f"[pushgate] {msg}\n".encode())
                return StepOutcome(None, error=msg)
            finally:
                os.close(out_w)
            watch = _Watch(loop, client, pid, out_r, log)
            try:
                timed_out = await watch.wait(req.timeout)
                if timed_out:
                    await watch.stop()
                    os.write(
                        log,
                        _ts()
                        + f"[pushgate] timed out after {req.timeout:g}s; "
                        "process group killed\n".encode(),
                    )
                    return StepOutcome(watch.returncode, timed_out=True)
            except asyncio.CancelledError:
                await watch.stop()
                os.write(log, _ts() + b"[pushgate] interrupted; process group killed\n")
                raise
            finally:
                watch.close()
            if watch.write_error is not None:
                raise watch.write_error  # the runner makes the step broken with it
            if watch.lost:
                msg = "the spawner helper died; the step's exit status is lost"
                os.write(log, _ts() + f"[pushgate] {msg}\n".encode())
                kill_group(pid)
                return StepOutcome(None, error=msg)
            os.write(log, _ts() + f"[pushgate] exit status {watch.returncode}\n".encode())
            return StepOutcome(watch.returncode)
        finally:
            os.close(log)

    async def job_done(self, files: JobFiles) -> str | None:
        return None  # the job's files are here already

    async def close(self) -> None:
        for sandbox in list(self._sandboxes):
            await self.release(sandbox)
        if self._spawner is not None:
            self._spawner.close()
            self._spawner = None


class _Watch:
    """Pump a step's output into its log with timestamps and notice its exit.

    One future, resolved when the step has exited and its output reached EOF
    (False) or when the timeout fires first (True).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        spawner: SpawnerClient,
        pid: int,
        out: int,
        log: int,
    ):
        self.loop = loop
        self.spawner = spawner
        self.pid = pid
        self.out = out
        self.log = log
        self.partial = b""
        self.returncode: int | None = None
        self.lost = False
        self.eof = False
        # Why the step's output could not be written to its log (the first error).
        self.write_error: OSError | None = None
        self.done: asyncio.Future[bool] = loop.create_future()
        self.exit_waiter: asyncio.Future[None] | None = None
        os.set_blocking(out, False)
        loop.add_reader(out, self._read)
        try:
            spawner.on_exit(pid, self._exited)
        except SpawnerDied:
            self._exited(None)

    async def wait(self, timeout: float) -> bool:
        timer = self.loop.call_later(timeout, self._resolve, True)
        try:
            return await self.done
        finally:
            timer.cancel()

    def _resolve(self, timed_out: bool) -> None:
        if not self.done.done():
            self.done.set_result(timed_out)

    def _read(self) -> bool:
        """Copy what the pipe holds into the log; False once it is empty for now."""
        try:
            data = os.read(self.out, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.out)
            self._write(b"", final=True)
            self.eof = True
            if self.returncode is not None:
                self._resolve(False)
            return False
        self._write(data)
        return True

    def _write(self, data: bytes, final: bool = False) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = b"" if final else lines.pop()
        if final and lines and lines[-1] == b"":
            lines.pop()
        if lines and self.write_error is None:
            ts = _ts()
            try:
                os.write(self.log, b"".join(ts + line + b"\n" for line in lines))
            except OSError as e:
                # The logs disk is full (or the log is otherwise unwritable): the output
                # is still read, so the step is not held up, and the error is the step's.
                self.write_error = e

    def _exited(self, code: int | None) -> None:
        if code is None:
            self.lost = True
        self.returncode = code
        if self.exit_waiter is not None and not self.exit_waiter.done():
            self.exit_waiter.set_result(None)
        # The output has usually ended with the process: read it to its end now
        # rather than on another turn of the loop.
        while not self.eof and not self.lost and self._read():
            pass
        if self.eof or self.lost:
            self._resolve(False)

    async def stop(self) -> None:
        """Kill the step's process group: SIGTERM, then SIGKILL after a grace."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # SIGKILL even after the leader exited: children that ignored
            # SIGTERM, or outlived the leader, go too.
            kill_group(self.pid, sig)
            if self.returncode is None and not self.lost:
                self.exit_waiter = self.loop.create_future()
                try:
                    await asyncio.wait_for(self.exit_waiter, KILL_GRACE_S)
                except TimeoutError:
                    pass

    def close(self) -> None:
        """Stop watching; output still buffered is flushed to the log."""
        try:
            self.loop.remove_reader(self.out)
        except (ValueError, OSError):
            pass
        if self.partial:
            self._write(b"", final=True)
        os.close(self.out)
        if self.returncode is None:
            self.spawner.forget(self.pid)
        if not self.done.done():
            self.done.cancel()


__all__ = ["LocalExecutor", "kill_group", "kill_orphans", "stamp"]
