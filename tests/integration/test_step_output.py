"""Issue 12 items 3 and 4 through the local executor, unisolated and in a job's sandbox,
with cgroups and with the sweep that replaces them: a step's output is cut into bounded
lines in bounded memory, short lines are not inflated by stamps, a log is capped with its
head and tail, and nothing a step started outlives it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pushgate.run.executors.base import Sandbox, StepOutcome, StepRun
from pushgate.run.executors.local import LocalExecutor
from pushgate.run.executors.sandbox import bwrap_path
from pushgate.run.executors.steplog import LINE_MAX
from tests.procs import alive

ENV = {"PATH": "/usr/bin:/bin"}
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} Z "
MiB = 1024 * 1024

# One step in a fresh Python, which prints its peak RSS (the runner's memory).
CHILD = """
import asyncio, json, resource, sys
from pushgate.run.executors.base import StepRun
from pushgate.run.executors.local import LocalExecutor
cmd, log, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def main():
    ex = LocalExecutor()
    try:
        req = StepRun(["/bin/sh", "-c", cmd], {"PATH": "/usr/bin:/bin"}, "/", log, 600,
                      log_max_bytes=cap)
        return await ex.run(req)
    finally:
        await ex.close()
code = asyncio.run(main()).exit_code
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"exit": code, "rss": rss}))
"""


def child_step(cmd: str, log: Path, cap: int = 1024**3) -> dict[str, int]:
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", CHILD, cmd, str(log), str(cap)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env=dict(os.environ, PYTHONPATH=root),
    )
    assert out.returncode == 0, out.stderr
    res: dict[str, int] = json.loads(out.stdout.splitlines()[-1])
    return res


def baseline_rss(tmp_path: Path) -> int:
    return child_step("true", tmp_path / "true.log")["rss"]


def test_80mb_without_a_newline_is_cut_into_lines_in_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "long.log"
    base = baseline_rss(tmp_path)
    res = child_step("head -c 80000000 /dev/zero | tr '\\0' x", log)
    assert res["exit"] == 0
    # The runner held a few lines' worth, not the output (it held 303 MB before).
    assert res["rss"] - base < 32 * MiB, (res, base)
    sizes = []
    with open(log, "rb") as f:
        for line in f:
            if b"[pushgate]" not in line:
                sizes.append(len(re.sub(rb"^(" + STAMP.encode() + rb"| )", b"", line)) - 1)
    assert sum(sizes) == 80_000_000
    assert max(sizes) <= LINE_MAX and len(sizes) == -(-80_000_000 // LINE_MAX)


def test_short_lines_are_not_inflated_by_stamps(tmp_path: Path) -> None:
    log = tmp_path / "yes.log"
    assert child_step("yes | head -c 20000000", log)["exit"] == 0
    size = log.stat().st_size
    assert size <= 2 * 20_000_000, size  # a stamp a line made it 14 times
    lines = log.read_bytes().splitlines()
    assert all(x == b" y" or re.match(STAMP.encode(), x) for x in lines)


def test_a_log_over_the_cap_keeps_its_head_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "capped.log"
    cap = 8 * MiB
    # The last line tells the tail from the head.
    res = child_step("yes | head -c 200000000; echo the-end", log, cap)
    assert res["exit"] == 0
    data = log.read_bytes()
    assert len(data) <= cap
    head, marker, tail = re.split(
        rb"(\n" + STAMP.encode() + rb"\[pushgate\] log over [^\n]*)", data
    )
    m = re.search(rb"\((\d+)\): (\d+) bytes \((\d+) lines\) .* its last (\d+) bytes", marker)
    assert m and int(m[1]) == cap
    kept_head = (head + b"\n").count(b"y\n")  # (the split took its last newline)
    assert kept_head > cap // 4  # the head is most of the cap
    assert re.search(rb" the-end\n" + STAMP.encode() + rb"\[pushgate\] exit status 0\n$", tail)
    # What was kept and what was dropped add up to the output.
    assert 2 * kept_head + int(m[2]) + int(m[4]) == 200_000_000 + len(b"the-end\n")


MODES = ["none", "bwrap"]


def run_steps(tmp_path: Path, isolation: str, *scripts: str) -> list[StepOutcome]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    sb = None
    if isolation == "bwrap":
        if bwrap_path() is None:
            pytest.skip("no bwrap")
        sb = Sandbox("t", (str(work),), (), (), ())

    async def go() -> list[StepOutcome]:
        ex = LocalExecutor()
        try:
            outs = []
            for i, s in enumerate(scripts):
                req = StepRun(["/bin/sh", "-c", s], ENV, work, tmp_path / f"{i}.log", 30, sb)
                outs.append(await ex.run(req))
            return outs
        finally:
            if sb is not None:
                await ex.release(sb)
            await ex.close()

    return asyncio.run(go())


@pytest.mark.parametrize("isolation", MODES)
def test_nothing_a_step_started_outlives_it(tmp_path: Path, isolation: str) -> None:
    pids = tmp_path / "work" / "pids"
    # Durations of this test's own (the other parameters run beside it under xdist).
    t = f"{os.getpid() % 1000:03d}"
    # A setsid daemon, a double-forked one, and a plain background child holding the
    # step's output open; the step itself ends at once.
    script = (
        f"setsid sh -c 'sleep 91.7{t} & echo $! >> pids; exec sleep 91.8{t}' </dev/null >/dev/null "
        f"2>&1 & (sh -c 'sleep 91.9{t} >/dev/null 2>&1 & echo $! >> pids' &);"
        f" sleep 92.1{t} & echo $! >> pids; sleep 0.3; echo started"
    )
    second = "cat pids; echo next"
    first, nxt = run_steps(tmp_path, isolation, script, second)
    assert first.exit_code == 0 and not first.timed_out
    assert nxt.exit_code == 0
    log = (tmp_path / "0.log").read_text()
    assert "started" in log
    m = re.search(r"\[pushgate\] killed (\d+) process\(es\) the step left running: (.*)", log)
    assert m, log
    assert int(m[1]) >= 4 and f"sleep 91.8{t}" in m[2] and f"sleep 92.1{t}" in m[2], log
    if isolation == "none":  # in the sandbox, pids are the sandbox's
        for pid in pids.read_text().split():
            assert not alive(int(pid)), (pid, log)
    for x in ("91.7", "91.8", "91.9", "92.1"):
        found = subprocess.run(["pgrep", "-f", f"sleep {x}{t}"], capture_output=True)
        assert found.returncode == 1, (x, found.stdout)
    assert "killed" not in (tmp_path / "1.log").read_text()
