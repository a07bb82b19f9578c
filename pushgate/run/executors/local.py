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
from pushgate.run.executors.sandbox import HOST, base_argv, job_spec
from pushgate.run.executors.steplog import StepLog

# Grace between SIGTERM and SIGKILL when a step times out or is cancelled.
KILL_GRACE_S = 2.0
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
# A read of a step's output; at most steplog.LINE_MAX, so a line within one is short.
READ_SIZE = 65536


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_marked(env: dict[str, str]) -> int:
    """Kill the process groups of the processes on this machine whose environment holds
    all of `env`: steps carry PUSHGATE_RUNNER, _FLIGHT, _JOB and _ATTEMPT, so those of a
    dead runner or a lost attempt are found in /proc without any write on the hot path;
    how many groups."""
    want = {f"{k}={v}".encode() for k, v in env.items()}
    groups = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if want <= set(f.read().split(b"\0")):
                    groups.add(os.getpgid(int(entry)))
        except (OSError, ProcessLookupError):
            continue
    for g in groups:
        kill_group(g)
    return len(groups)


def kill_orphans(runner: str, flight: int) -> int:
    """Kill the process groups of steps a dead runner left behind on this machine."""
    return kill_marked({"PUSHGATE_RUNNER": runner, "PUSHGATE_FLIGHT": str(flight)})


# What a step left running and was killed when it ended: pid and command line.
Killed = list[tuple[int, str]]


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
        self.exit_callbacks: dict[int, Callable[[int | None, Killed], None]] = {}
        # Exits reported before anyone asked (a step that ended at once).
        self.exits: dict[int, tuple[int, Killed]] = {}
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
        """Start argv with `out` as its stdout and stderr; its pid (OSError if it cannot
        start)."""
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
            self._died()  # (before its end of the socket was read)
            raise SpawnerDied(f"cannot reach the spawner helper: {e}") from None
        return await fut

    def sandbox(self, bwrap: list[str], host: str, spec: tuple) -> SpawnerClient:
        """Have the helper's zygote for the runner's sandbox (bwrap's arguments) fork an
        agent that makes the job's namespaces (spec) in it and starts steps inside them;
        its client (await .ready before spawning)."""
        return self._ask_agent(("sandbox", 0, bwrap, host, spec))

    def _ask_agent(self, msg: tuple) -> SpawnerClient:
        if self.dead:
            raise SpawnerDied("the spawner helper died")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            try:
                socket.send_fds(self.sock, [marshal.dumps(msg)], [theirs.fileno()])
            except OSError as e:
                ours.close()
                self._died()  # (before its end of the socket was read)
                raise SpawnerDied(f"cannot reach the spawner helper: {e}") from None
        return SpawnerClient(ours)

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Signal a step's process group: through its agent, which knows it (in a
        sandbox its pid is of the sandbox's own namespace)."""
        if self.ready is None:
            kill_group(pid, sig)
        elif not self.dead:
            try:
                self.sock.send(marshal.dumps(("kill", 0, pid, int(sig))))
            except OSError:
                pass

    async def shut(self, timeout: float = 10.0) -> None:
        """An agent's end: it kills what still runs in its sandbox, then exits."""
        if self.gone is not None and not self.dead:
            try:
                self.sock.shutdown(socket.SHUT_WR)
                await asyncio.wait_for(asyncio.shield(self.gone), timeout)
            except (OSError, TimeoutError):
                pass
        self.close()

    def on_exit(self, pid: int, callback: Callable[[int | None, Killed], None]) -> None:
        """Call callback(exit code, -signal if killed; what the step left running and was
        killed) once pid has been reaped, or callback(None, []) if the helper died first."""
        if pid in self.exits:
            callback(*self.exits.pop(pid))
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
                _, pid, code, killed = msg
                left = [(p, c) for p, c in killed]
                cb = self.exit_callbacks.pop(pid, None)
                if cb is None:
                    self.exits[pid] = (code, left)
                else:
                    cb(code, left)
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
            cb(None, [])
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
    """Steps as processes on this machine, started and reaped by a job's agent.

    Each job has an agent, forked by the spawner helper (or, in a sandbox, by the
    zygote of the runner's sandbox): it starts the job's steps in turn, reports their
    exits, and kills what a step left running when it ends (see spawner.py). Output is
    read from a non-blocking pipe on the event loop: no watcher thread per child, no
    asyncio transport, no fork in the runner.
    """

    name = "local"

    def __init__(self) -> None:
        # argv[0] -> its path, per PATH: without it the child of every step
        # tries execve in each PATH directory in turn, while the helper waits.
        self._which: dict[tuple[str, str], str | None] = {}
        self._spawner: SpawnerClient | None = None
        # The agents of the jobs' sandboxes (made at a job's first step).
        self._agents: dict[Sandbox, SpawnerClient] = {}

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
        """Who starts the step: the helper, or the agent of the job's sandbox (made at the
        job's first step)."""
        if sandbox is None:
            return self.spawner()
        client = self._agents.get(sandbox)
        if client is None:
            argv, spec = base_argv(sandbox), job_spec(sandbox)
            try:
                client = self.spawner().sandbox(argv, HOST, spec)
            except SpawnerDied:  # the helper died since it was last asked: a new one
                client = self.spawner().sandbox(argv, HOST, spec)
            self._agents[sandbox] = client
            assert client.ready is not None
            try:
                await client.ready
            except OSError as e:
                raise OSError(e.errno, f"cannot make the job's sandbox: {e.strerror}") from None
        elif client.dead:
            # (Killed: its sandbox with it.) The job goes on in a new one.
            del self._agents[sandbox]
            return await self._client(sandbox)
        return client

    async def _spawn(
        self, req: StepRun, out: int, env: dict[str, str]
    ) -> tuple[SpawnerClient, int]:
        argv0 = req.argv[0]
        exe = self._executable(argv0, env)
        client = await self._client(req.sandbox)
        cwd = str(req.cwd)
        try:
            pid = await client.spawn(req.argv, exe or argv0, cwd, env, out)
        except FileNotFoundError:
            if exe is None:
                raise
            # The binary found earlier may be gone: search PATH afresh, once (not
            # recursively: a missing cwd fails with the same error every time).
            self._which.clear()
            exe = self._executable(argv0, env)
            pid = await client.spawn(req.argv, exe or argv0, cwd, env, out)
        return client, pid

    async def release(self, sandbox: Sandbox) -> None:
        client = self._agents.pop(sandbox, None)
        if client is not None:
            await client.shut()

    async def run(self, req: StepRun) -> StepOutcome:
        loop = asyncio.get_running_loop()
        try:
            log = os.open(req.log, _LOG_FLAGS, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(req.log), exist_ok=True)
            log = os.open(req.log, _LOG_FLAGS, 0o644)
        steplog = StepLog(log, req.log_max_bytes)
        try:
            steplog.note(f"run: {shlex.join(req.argv)} (cwd {req.cwd})")
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            try:
                client, pid = await self._spawn(req, out_w, req.env)
            except (SpawnerDied, OSError) as e:
                os.close(out_r)
                why = e.strerror if isinstance(e, OSError) else e
                msg = f"cannot start {req.argv[0]!r}: {why}"
                steplog.note(msg)
                return StepOutcome(None, error=msg)
            finally:
                os.close(out_w)
            watch = _Watch(loop, client, pid, out_r, steplog)
            end = ""
            try:
                if await watch.wait(req.timeout):
                    await watch.stop()
                    end = f"timed out after {req.timeout:g}s; process group killed"
            except asyncio.CancelledError:
                await watch.stop()
                end = "interrupted; process group killed"
                raise
            finally:
                # The step ended with its command, and whatever it left running with it
                # (killed by the helper or its agent as it reaped the step): its output
                # is read to the end.
                killed = watch.killed
                held = not await watch.drain()
                watch.close()
                steplog.finish()
                if killed:
                    steplog.note(describe(killed))
                if held:
                    steplog.note("output still open after the step ended; not read further")
                if end:
                    steplog.note(end)
            if end:
                return StepOutcome(watch.returncode, timed_out=True)
            if steplog.write_error is not None:
                raise steplog.write_error  # the runner makes the step broken with it
            if watch.lost:
                who = "the spawner helper" if client.ready is None else "the job's sandbox"
                msg = f"{who} died; the step's exit status is lost"
                steplog.note(msg)
                client.kill(pid)
                return StepOutcome(None, error=msg)
            steplog.note(f"exit status {watch.returncode}")
            return StepOutcome(watch.returncode)
        finally:
            os.close(log)

    async def job_done(self, files: JobFiles) -> str | None:
        return None  # the job's files are here already

    async def close(self) -> None:
        for sandbox in list(self._agents):
            await self.release(sandbox)
        if self._spawner is not None:
            self._spawner.close()
            self._spawner = None


def describe(found: list[tuple[int, str]]) -> str:
    """The log line's text for the processes killed."""
    shown = ", ".join(f"{pid} ({cmd})" for pid, cmd in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    return f"killed {len(found)} process(es) the step left running: {shown}{more}"


class _Watch:
    """Pump a step's output into its log and notice its exit.

    One future, resolved when the step's command has exited and the output it left in
    the pipe is read (False), or when the timeout fires first (True).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        spawner: SpawnerClient,
        pid: int,
        out: int,
        log: StepLog,
    ):
        self.loop = loop
        self.spawner = spawner
        self.pid = pid
        self.out = out
        self.log = log
        self.returncode: int | None = None
        self.killed: Killed = []
        self.lost = False
        self.eof = False
        self.done: asyncio.Future[bool] = loop.create_future()
        self.exit_waiter: asyncio.Future[None] | None = None
        self.eof_waiter: asyncio.Future[None] | None = None
        os.set_blocking(out, False)
        loop.add_reader(out, self._read)
        try:
            spawner.on_exit(pid, self._exited)
        except SpawnerDied:
            self._exited(None, [])

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
            data = os.read(self.out, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.out)
            self.eof = True
            if self.eof_waiter is not None and not self.eof_waiter.done():
                self.eof_waiter.set_result(None)
            return False
        self.log.feed(data)
        return True

    def _exited(self, code: int | None, killed: Killed) -> None:
        if code is None:
            self.lost = True
        self.returncode = code
        self.killed = killed
        if self.exit_waiter is not None and not self.exit_waiter.done():
            self.exit_waiter.set_result(None)
        # The output has usually ended with the process: read it to its end now
        # rather than on another turn of the loop.
        while not self.eof and self._read():
            pass
        self._resolve(False)

    async def drain(self) -> bool:
        """Read the output to its end (the step's leftovers are killed); False if it is
        still open after a grace."""
        while not self.eof and self._read():
            pass
        if not self.eof:
            self.eof_waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self.eof_waiter, KILL_GRACE_S)
            except TimeoutError:
                pass
        return self.eof

    async def stop(self) -> None:
        """Kill the step's process group: SIGTERM, then SIGKILL after a grace."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # SIGKILL even after the leader exited: children that ignored
            # SIGTERM, or outlived the leader, go too.
            self.spawner.kill(self.pid, sig)
            if self.returncode is None and not self.lost:
                self.exit_waiter = self.loop.create_future()
                try:
                    await asyncio.wait_for(self.exit_waiter, KILL_GRACE_S)
                except TimeoutError:
                    pass

    def close(self) -> None:
        """Stop watching."""
        try:
            self.loop.remove_reader(self.out)
        except (ValueError, OSError):
            pass
        os.close(self.out)
        if self.returncode is None:
            self.spawner.forget(self.pid)
        if not self.done.done():
            self.done.cancel()


__all__ = ["LocalExecutor", "kill_group", "kill_marked", "kill_orphans", "stamp"]
