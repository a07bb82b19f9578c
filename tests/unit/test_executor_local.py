"""The local executor: timestamped logs, exit codes, timeouts that kill the whole process
group, and finding a dead runner's orphaned steps."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from pushgate.run.executors.base import StepRun
from pushgate.run.executors.local import LocalExecutor, kill_orphans
from tests.procs import alive

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} Z"


def run(req: StepRun):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        ex = LocalExecutor()
        try:
            return await ex.run(req)
        finally:
            await ex.close()

    return asyncio.run(go())


def test_output_is_timestamped_line_by_line(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "1.step.log"
    script = "echo one; echo two >&2; printf 'no newline'; exit 3"
    out = run(StepRun(["/bin/sh", "-c", script], dict(os.environ), tmp_path, log, 10))
    assert out.exit_code == 3 and not out.timed_out and out.error is None
    lines = log.read_text().splitlines()
    assert re.fullmatch(rf"{STAMP} \[pushgate\] run: /bin/sh -c .*", lines[0])
    # A line is stamped in full, or starts with a space: same second as the line above.
    assert all(re.match(STAMP + " ", x) or x.startswith(" ") for x in lines)
    assert [re.sub(f"^({STAMP})? ", "", x) for x in lines[1:]] == [
        "one",
        "two",
        "no newline",
        "[pushgate] exit status 3",
    ]


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The step leaves a background child behind and ignores SIGTERM itself.
    script = f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"
    t0 = time.monotonic()
    out = run(
        StepRun(["/bin/sh", "-c", script], dict(os.environ), tmp_path, tmp_path / "t.log", 0.5)
    )
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
    other = subprocess.Popen(
        ["sleep", "60"], env=dict(env, PUSHGATE_FLIGHT="8"), start_new_session=True
    )
    try:
        time.sleep(0.1)
        assert kill_orphans("host:1:2", 7) == 1
        mine.wait(timeout=5)
        assert other.poll() is None  # another flight's step is left alone
    finally:
        other.kill()
        other.wait()


def test_step_starts_with_default_signal_handling(tmp_path: Path) -> None:
    # The helper ignores SIGINT/SIGTERM/SIGHUP and Python ignores SIGPIPE: a step
    # must see none of that (a `yes | head` pipeline relies on SIGPIPE).
    script = "grep -E '^Sig(Ign|Blk)' /proc/self/status"
    log = tmp_path / "s.log"
    out = run(StepRun(["/bin/sh", "-c", script], dict(os.environ), tmp_path, log, 10))
    assert out.exit_code == 0
    masks = dict(re.findall(r"(Sig\w+):\s+([0-9a-f]+)$", log.read_text(), re.M))
    # Standard signals only: glibc's posix_spawn leaves its own internal signals
    # (32 and 33) ignored, which glibc in the step handles for itself.
    assert int(masks["SigIgn"], 16) & 0x7FFFFFFF == 0, masks
    assert int(masks["SigBlk"], 16) == 0, masks


def test_step_runs_in_its_own_session_in_cwd(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    script = "pwd; ps -o sid= -p $$; echo $$"
    out = run(StepRun(["/bin/sh", "-c", script], dict(os.environ), tmp_path, log, 10))
    assert out.exit_code == 0
    lines = [re.sub(STAMP + " ", "", x).strip() for x in log.read_text().splitlines()[1:4]]
    assert lines[0] == str(tmp_path)
    assert lines[1] == lines[2]  # the step leads a session of its own


def test_missing_cwd_is_an_error_naming_it(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    out = run(StepRun(["true"], dict(os.environ), gone, tmp_path / "m.log", 5))
    assert out.exit_code is None and out.error and f"cannot enter {gone}" in out.error


def test_exit_by_signal_is_a_negative_code(tmp_path: Path) -> None:
    out = run(
        StepRun(
            ["/bin/sh", "-c", "kill -USR1 $$"], dict(os.environ), tmp_path, tmp_path / "k.log", 5
        )
    )
    assert out.exit_code == -signal.SIGUSR1


def test_command_is_found_on_the_steps_path(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\necho from-mytool\n")
    tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    log = tmp_path / "p.log"
    out = run(StepRun(["mytool"], env, tmp_path, log, 5))
    assert out.exit_code == 0 and "from-mytool" in log.read_text()


def test_helper_death_breaks_the_running_step_and_the_next_step_runs(tmp_path: Path) -> None:
    async def go() -> tuple[object, object, int]:
        ex = LocalExecutor()
        try:
            slow = asyncio.create_task(
                ex.run(
                    StepRun(["sleep", "30.713"], dict(os.environ), tmp_path, tmp_path / "a.log", 60)
                )
            )
            await asyncio.sleep(0.5)
            helper = ex.spawner().proc.pid
            os.kill(helper, signal.SIGKILL)
            first = await asyncio.wait_for(slow, 10)
            second = await ex.run(
                StepRun(["true"], dict(os.environ), tmp_path, tmp_path / "b.log", 10)
            )
            return first, second, helper
        finally:
            await ex.close()

    first, second, helper = asyncio.run(go())
    assert first.error and "spawner helper died" in first.error  # type: ignore[attr-defined]
    assert "spawner helper died" in (tmp_path / "a.log").read_text()
    assert second.exit_code == 0  # type: ignore[attr-defined]
    assert not alive(helper)
    # Its step went too (killed by the runner: the helper that would have is gone).
    for _ in range(100):
        if subprocess.run(["pgrep", "-f", r"^sleep 30\.713$"], capture_output=True).returncode == 1:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the dead helper's step lives on")


def test_helper_exits_when_the_executor_closes(tmp_path: Path) -> None:
    async def go() -> int:
        ex = LocalExecutor()
        await ex.run(StepRun(["true"], dict(os.environ), tmp_path, tmp_path / "c.log", 5))
        pid = ex.spawner().proc.pid
        await ex.close()
        return pid

    assert not alive(asyncio.run(go()))


def test_many_steps_at_once_each_get_their_own_output_and_status(tmp_path: Path) -> None:
    async def go() -> list[object]:
        ex = LocalExecutor()
        try:
            return list(
                await asyncio.gather(
                    *(
                        ex.run(
                            StepRun(
                                ["/bin/sh", "-c", f"echo step{i}; exit {i % 3}"],
                                dict(os.environ),
                                tmp_path,
                                tmp_path / f"{i}.log",
                                10,
                            )
                        )
                        for i in range(40)
                    )
                )
            )
        finally:
            await ex.close()

    outs = asyncio.run(go())
    for i, out in enumerate(outs):
        assert out.exit_code == i % 3  # type: ignore[attr-defined]
        assert f"step{i}" in (tmp_path / f"{i}.log").read_text()


def test_step_inherits_no_descriptor_of_the_harness(tmp_path: Path) -> None:
    log = tmp_path / "fd.log"
    out = run(StepRun(["/bin/sh", "-c", "ls /proc/self/fd"], dict(os.environ), tmp_path, log, 5))
    assert out.exit_code == 0
    fds = {re.sub(STAMP + " ", "", x).strip() for x in log.read_text().splitlines()[1:-1]}
    # stdin, stdout, stderr, and the one ls opens to list the directory.
    assert len(fds - {"0", "1", "2"}) <= 1, fds
