"""The local executor: timestamped logs, exit codes, timeouts that kill the whole process
group, and finding a dead runner's orphaned steps."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path

from pushgate.executors.base import StepRun
from pushgate.executors.local import LocalExecutor, kill_orphans

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} Z"


def run(req: StepRun):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        ex = LocalExecutor()
        try:
            return await ex.run(req)
        finally:
            await ex.close()

    return asyncio.run(go())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_output_is_timestamped_line_by_line(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "1.step.log"
    script = "echo one; echo two >&2; printf 'no newline'; exit 3"
    out = run(StepRun(["/bin/sh", "-c", script], dict(os.environ), tmp_path, log, 10))
    assert out.exit_code == 3 and not out.timed_out and out.error is None
    lines = log.read_text().splitlines()
    assert re.fullmatch(rf"{STAMP} \[pushgate\] run: /bin/sh -c .*", lines[0])
    assert [re.sub(STAMP + " ", "", x) for x in lines[1:]] == [
        "one", "two", "no newline", "[pushgate] exit status 3"]


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The step leaves a background child behind and ignores SIGTERM itself.
    script = f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"
    t0 = time.monotonic()
    out = run(StepRun(["/bin/sh", "-c", script], dict(os.environ), tmp_path,
                      tmp_path / "t.log", 0.5))
    assert out.timed_out
    assert time.monotonic() - t0 < 10
    time.sleep(0.1)
    assert not alive(int(pidfile.read_text()))
    assert "timed out after 0.5s" in (tmp_path / "t.log").read_text()


def test_missing_command_is_an_error_not_a_crash(tmp_path: Path) -> None:
    out = run(StepRun(["/no/such/command"], dict(os.environ), tmp_path, tmp_path / "m.log", 5))
    assert out.exit_code is None and out.error and "cannot start" in out.error


def test_kill_orphans_finds_steps_by_runner_and_flight(tmp_path: Path) -> None:
    env = dict(os.environ, PUSHGATE_RUNNER="host:1:2", PUSHGATE_FLIGHT="7")
    mine = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], env=dict(env, PUSHGATE_FLIGHT="8"),
                             start_new_session=True)
    try:
        time.sleep(0.1)
        assert kill_orphans("host:1:2", 7) == 1
        mine.wait(timeout=5)
        assert other.poll() is None  # another flight's step is left alone
    finally:
        other.kill()
        other.wait()
