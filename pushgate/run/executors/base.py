"""The executor interface: run one step's command on a host, logging its output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# runner.log_max_bytes's default.
LOG_MAX_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class Sandbox:
    """What a job's steps may reach: one sandbox a job, shared by its steps in turn.

    The root file system is read-only; `hidden` dirs are replaced by empty ones and
    `hidden_files` by /dev/null (pushgate's state, config and credentials); `writable`
    dirs are bound back read-write (the job's work, artifact and temporary dirs, and
    `runner.shared`), `readonly` ones read-only (its buildjobs' artifacts). Without
    `network` the steps have a network namespace of their own with loopback only.
    """

    key: str
    writable: tuple[str, ...]
    readonly: tuple[str, ...]
    hidden: tuple[str, ...]
    hidden_files: tuple[str, ...]
    network: bool = False


@dataclass(frozen=True)
class JobFiles:
    """One attempt's files, for an executor that runs steps on another machine (ssh):
    sent there before the job's first step, what it keeps fetched back by job_done."""

    key: str
    workdir: str
    artifacts: str
    # Its HOME and TMPDIR.
    tmpdir: str
    # Its buildjobs' artifact dirs (read-only inputs).
    inputs: tuple[str, ...] = ()
    # The job's artifact globs, relative to workdir.
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepRun:
    """What the runner asks of an executor for one step."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path | str
    log: Path | str
    timeout: float
    # None: the step runs as pushgate's own processes do (runner.isolation = "none").
    sandbox: Sandbox | None = None
    # The job's files (for an executor of a remote host).
    files: JobFiles | None = None
    # The step's log is cut to this size (runner.log_max_bytes): its head and its tail.
    log_max_bytes: int = LOG_MAX_BYTES


@dataclass(frozen=True)
class StepOutcome:
    exit_code: int | None
    timed_out: bool = False
    # A harness problem (could not start the command, host gone): the step is broken.
    error: str | None = None
    # The error was the host's (unreachable, connection lost): "lost"; or the host must not
    # be used until a health check passes on it (its host key changed): "bad". The job may
    # be rerun on another host.
    host_fault: str | None = None


class Executor(Protocol):
    name: str

    def start(self) -> None:
        """Get ready to run steps (called once, before the first)."""

    async def run(self, req: StepRun) -> StepOutcome: ...

    async def release(self, sandbox: Sandbox) -> None:
        """The job is done with its sandbox: everything still running in it is killed."""

    async def job_done(self, files: JobFiles) -> str | None:
        """The job ran its last step: its files come back from a remote host (and go from
        it). Why they could not (the job is then broken), or None."""

    async def close(self) -> None: ...


# (second, its formatted date and time): a step's log lines mostly share a second,
# and strftime is the dear part of a stamp.
_second: tuple[int, str] = (-1, "")


def stamp(t: float | None = None) -> str:
    """Timestamp prefix of a log line (UTC, milliseconds, osstest's trailing Z)."""
    global _second
    t = time.time() if t is None else t
    sec = int(t)
    if _second[0] != sec:
        _second = (sec, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec)))
    return f"{_second[1]}.{int(t * 1000) % 1000:03d} Z"
