"""Progress of a running flight: plain lines per step start and end without a terminal, a
live display that ticks and shows the running step on one."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from pushgate.cli.progress import run_with_progress
from pushgate.run.plan import new_flight
from tests.flightkit import Project, make_project

JOBS = {
    "build-x": {
        "steps": [
            {"testid": "build", "command": "true"},
            {"testid": "slow", "command": "sleep 1.3"},
        ],
    },
    "test-x": {
        "buildjob": "build-x",
        "steps": [{"testid": "run", "command": "exit 1"}],
    },
}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path, f"sqlite:///{tmp_path}/state/pushgate.db")


def pg(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # stdout is a pipe: not a terminal.
    return subprocess.run(
        [sys.executable, "-m", "pushgate.cli", "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _lines(out: str) -> list[str]:
    """The progress lines, without their clock."""
    return [m.group(1) for m in re.finditer(r"^\[\s*[\d.]+s\] (.*)$", out, re.M)]


def test_pipe_gets_a_line_per_step_start_and_end(project: Project) -> None:
    cfg = project.config(JOBS)
    n = int(pg(cfg, "flight", "new", "b").stdout)
    r = pg(cfg, "flight", "run", str(n))
    lines = _lines(r.stdout)
    assert lines[0] == f"flight {n} (b): started, 2 jobs"
    assert lines[-1] == f"flight {n} (b): finished: fail 1, pass 1"
    steps = [re.sub(r" \(\d+\.\ds\)$", " (T)", s) for s in lines if ": step " in s]
    assert steps == [
        "build-x: step 1 build started",
        "build-x: step 1 build pass (T)",
        "build-x: step 2 slow started",
        "build-x: step 2 slow pass (T)",
        "test-x: step 2 run started",
        "test-x: step 2 run fail (T)",
    ]
    # The slow step's line says how long it ran.
    took = re.search(r"build-x: step 2 slow pass \((\d+\.\d)s\)", r.stdout)
    assert took and 1.2 <= float(took.group(1)) < 10
    assert "build-x: pass" in lines and "test-x: fail" in lines
    # The step's start is printed when it starts: before its end, with the clock between.
    clock = {
        m.group(2): float(m.group(1))
        for m in re.finditer(r"^\[\s*([\d.]+)s\] (build-x: step 2 slow \w+)", r.stdout, re.M)
    }
    assert clock["build-x: step 2 slow pass"] - clock["build-x: step 2 slow started"] >= 1.2


def test_quiet_prints_a_line_per_flight(project: Project) -> None:
    cfg = project.config(JOBS)
    n = int(pg(cfg, "flight", "new", "b").stdout)
    r = pg(cfg, "flight", "run", "-q", str(n))
    assert _lines(r.stdout) == [
        f"flight {n} (b): started, 2 jobs",
        f"flight {n} (b): finished: fail 1, pass 1",
    ]


def test_live_display_ticks_and_shows_the_running_step(project: Project) -> None:
    loaded, db = project.load(JOBS)
    n = new_flight(db, loaded, "b")
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system=None)
    statuses, _ = run_with_progress(db, loaded, n, console)
    assert statuses == {"build-x": "pass", "test-x": "fail"}
    out = buf.getvalue()
    # Refreshed while nothing happened: the slow step's clock moved on by itself.
    elapsed = {float(x) for x in re.findall(r"elapsed (\d+\.\d)s", out)}
    assert len(elapsed) >= 4 and max(elapsed) - min(elapsed) >= 1.0
    shown = re.findall(r"build-x\s+localhost\s+2 slow\s+(\d+)s", out)
    assert "2 slow" in out and {"0", "1"} <= set(shown)
    assert "done 2/2" in out and "not passed 1" in out
