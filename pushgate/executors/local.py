"""Run steps on this machine: one process group per step, output timestamped to the log.

This is the hot path of a flight (a step of `true` should cost the harness well
under a millisecond), so a step is one Popen, one pidfd and one pipe watched
by the event loop, one future, and a log written with raw os calls.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import time

from pushgate.executors.base import StepOutcome, StepRun, stamp

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


class _Stamper:
    """Log-line prefixes; the formatted second is reused until the clock moves on."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self) -> bytes:
        t = time.time()
        sec = int(t)
        if sec != self.second:
            self.second = sec
            self.prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
        return f"{self.prefix}.{int(t * 1000) % 1000:03d} Z ".encode()


class LocalExecutor:
    """Steps as child processes of this runner.

    Exit is awaited through a pidfd and output read from a non-blocking pipe,
    all on the event loop: no watcher thread per child, no asyncio transport.
    """

    name = "local"

    def __init__(self) -> None:
        self.stamp = _Stamper()
        # argv[0] -> its path, per PATH: without it the child of every step
        # tries execve in each PATH directory in turn, while the runner waits.
        self._which: dict[tuple[str, str], str | None] = {}

    def _executable(self, argv0: str, env: dict[str, str]) -> str | None:
        if "/" in argv0:
            return None
        key = (argv0, env.get("PATH", os.defpath))
        if key not in self._which:
            self._which[key] = shutil.which(argv0, path=key[1])
        return self._which[key]

    def _spawn(self, req: StepRun, log: int) -> subprocess.Popen[bytes]:
        exe = self._executable(req.argv[0], req.env)
        try:
            return subprocess.Popen(
                req.argv,
                executable=exe,
                cwd=req.cwd,
                env=req.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            if exe is None:
                raise
            # The binary we found earlier is gone: search PATH afresh.
            self._which.clear()
            return self._spawn(req, log)

    async def run(self, req: StepRun) -> StepOutcome:
        loop = asyncio.get_running_loop()
        try:
            log = os.open(req.log, _LOG_FLAGS, 0o644)
        except FileNotFoundError:
            req.log.parent.mkdir(parents=True, exist_ok=True)
            log = os.open(req.log, _LOG_FLAGS, 0o644)
        try:
            os.write(
                log,
                self.stamp() + f"[pushgate] run: {shlex.join(req.argv)} (cwd {req.cwd})\n".encode(),
            )
            try:
                proc = self._spawn(req, log)
            except OSError as e:
                msg = f"cannot start {req.argv[0]!r}: {e.strerror}"
                os.write(log, self.stamp() + f"[pushgate] {msg}\n".encode())
                return StepOutcome(None, error=msg)
            watch = _Watch(loop, proc, log, self.stamp)
            try:
                timed_out = await watch.wait(req.timeout)
                if timed_out:
                    await watch.stop()
                    os.write(
                        log,
                        self.stamp()
                        + f"[pushgate] timed out after {req.timeout:g}s; "
                        "process group killed\n".encode(),
                    )
                    return StepOutcome(proc.returncode, timed_out=True)
            except asyncio.CancelledError:
                await watch.stop()
                os.write(log, self.stamp() + b"[pushgate] interrupted; process group killed\n")
                raise
            finally:
                watch.close()
            os.write(log, self.stamp() + f"[pushgate] exit status {proc.returncode}\n".encode())
            return StepOutcome(proc.returncode)
        finally:
            os.close(log)

    async def close(self) -> None:
        return None


class _Watch:
    """Pump a child's output into its log with timestamps and notice its exit.

    One future, resolved when the child has exited and its output reached EOF
    (False) or when the timeout fires first (True).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        proc: subprocess.Popen[bytes],
        log: int,
        stamp: _Stamper,
    ):
        self.loop = loop
        self.proc = proc
        self.log = log
        self.stamp = stamp
        self.partial = b""
        self.exited = False
        self.eof = False
        self.done: asyncio.Future[bool] = loop.create_future()
        self.exit_waiter: asyncio.Future[None] | None = None
        assert proc.stdout is not None
        self.out = proc.stdout.fileno()
        os.set_blocking(self.out, False)
        self.pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(self.out, self._read)
        loop.add_reader(self.pidfd, self._exit)

    async def wait(self, timeout: float) -> bool:
        timer = self.loop.call_later(timeout, self._resolve, True)
        try:
            return await self.done
        finally:
            timer.cancel()

    def _resolve(self, timed_out: bool) -> None:
        if not self.done.done():
            self.done.set_result(timed_out)

    def _read(self) -> None:
        try:
            data = os.read(self.out, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self.out)
            self._write(b"", final=True)
            self.eof = True
            if self.exited:
                self._resolve(False)
            return
        self._write(data)

    def _write(self, data: bytes, final: bool = False) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = b"" if final else lines.pop()
        if final and lines and lines[-1] == b"":
            lines.pop()
        if lines:
            ts = self.stamp()
            os.write(self.log, b"".join(ts + line + b"\n" for line in lines))

    def _exit(self) -> None:
        self.loop.remove_reader(self.pidfd)
        self.proc.wait()
        self.exited = True
        if self.exit_waiter is not None and not self.exit_waiter.done():
            self.exit_waiter.set_result(None)
        if self.eof:
            self._resolve(False)

    async def stop(self) -> None:
        """Kill the step's process group: SIGTERM, then SIGKILL after a grace."""
        pid = self.proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # SIGKILL even after the leader exited: children that ignored
            # SIGTERM, or outlived the leader, go too.
            kill_group(pid, sig)
            if not self.exited:
                self.exit_waiter = self.loop.create_future()
                try:
                    await asyncio.wait_for(self.exit_waiter, KILL_GRACE_S)
                except TimeoutError:
                    pass
        self.proc.poll()

    def close(self) -> None:
        """Stop watching; output still buffered is flushed to the log."""
        for fd in (self.out, self.pidfd):
            try:
                self.loop.remove_reader(fd)
            except (ValueError, OSError):
                pass
        if self.partial:
            self._write(b"", final=True)
        os.close(self.pidfd)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if not self.done.done():
            self.done.cancel()


__all__ = ["LocalExecutor", "kill_group", "kill_orphans", "stamp"]
