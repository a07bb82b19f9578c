"""Run steps on this machine: one process group per step, output timestamped to the log."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal

from pushgate.executors.base import StepOutcome, StepRun, stamp

# Grace between SIGTERM and SIGKILL when a step times out or is cancelled.
KILL_GRACE_S = 2.0


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


class LocalExecutor:
    name = "local"

    async def run(self, req: StepRun) -> StepOutcome:
        if not os.path.isdir(req.log.parent):
            req.log.parent.mkdir(parents=True, exist_ok=True)
        with open(req.log, "ab", buffering=0) as log:
            log.write(
                f"{stamp()} [pushgate] run: {shlex.join(req.argv)} (cwd {req.cwd})\n".encode()
            )
            try:
                proc = await asyncio.create_subprocess_exec(
                    *req.argv,
                    cwd=req.cwd,
                    env=req.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                msg = f"cannot start {req.argv[0]!r}: {e.strerror}"
                log.write(f"{stamp()} [pushgate] {msg}\n".encode())
                return StepOutcome(None, error=msg)
            if req.on_start:
                req.on_start(proc.pid)
            try:
                await asyncio.wait_for(self._pump(proc, log), timeout=req.timeout)
            except TimeoutError:
                await self._stop(proc)
                log.write(
                    f"{stamp()} [pushgate] timed out after {req.timeout:g}s; "
                    "process group killed\n".encode()
                )
                return StepOutcome(proc.returncode, timed_out=True)
            except asyncio.CancelledError:
                await self._stop(proc)
                log.write(f"{stamp()} [pushgate] interrupted; process group killed\n".encode())
                raise
            log.write(f"{stamp()} [pushgate] exit status {proc.returncode}\n".encode())
            return StepOutcome(proc.returncode)

    @staticmethod
    async def _pump(proc: asyncio.subprocess.Process, log: object) -> None:
        assert proc.stdout is not None
        write = log.write  # type: ignore[attr-defined]
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            write(
                stamp().encode() + b" " + line
                if line.endswith(b"\n")
                else stamp().encode() + b" " + line + b"\n"
            )
        await proc.wait()

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> None:
        kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        except TimeoutError:
            pass
        # Children that ignored SIGTERM, or outlived the leader, go too.
        kill_group(proc.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
        except TimeoutError:
            pass

    async def close(self) -> None:
        return None
