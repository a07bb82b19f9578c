"""The benchmarks still run: each, at a tiny size, ends with its line of JSON.

No figure is checked here (timings belong to the benchmarks, not to tests on
a noisy machine); what is checked is that a benchmark runs to the end and
reports the keys that are tracked from run to run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _last_json(script: str, args: str, cwd: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args.split()],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_overhead_bench_runs_a_flight_and_make(tmp_path: Path) -> None:
    figures = _last_json("overhead.py", f"--jobs 3 --steps 2 --repeat 1 --tmp {tmp_path}", tmp_path)
    for key in (
        "make_s",
        "pushgate_s",
        "ratio_vs_make",
        "pushgate_unisolated_s",
        "ratio_vs_make_unisolated",
        "sleep_efficiency",
        "runner_cpu_ms_per_step",
        "unisolated_children_cpu_ms_per_step",
        "file_create_us",
    ):
        assert figures[key] > 0, key
    assert figures["runner_sys_cpu_ms_per_step"] >= 0
    # In /proc/stat's ticks (10 ms): a flight of 6 steps may take less than one.
    for kind in ("make", "isolated", "unisolated"):
        assert figures[f"machine_cpu_ms_per_step_{kind}"] >= 0
    # Every sleep took 50 ms: a flight of 3 x 2 on 8 slots cannot beat 0.1 s.
    assert figures["sleep_flight_s"] >= 0.1
    # Its state went where it was told, and was cleaned up.
    assert not any(tmp_path.glob(".bench-overhead-*"))


def test_report_bench_runs_on_sqlite(tmp_path: Path) -> None:
    figures = _last_json(
        "report.py", f"--flights 20 --db sqlite --repeat 1 --workdir {tmp_path / 'w'}", tmp_path
    )
    assert figures["report_s_20_sqlite"] > 0
    assert figures["step_rows_sqlite"] > 0


SOAK_KEYS = (
    "cycles",
    "kills",
    "pushes_made",
    "pushes_expected",
    "wrong_push_records",
    "duplicate_mails",
    "missing_mails",
    "lost_step_results",
    "disk_used_bytes",
    "disk_bound_bytes",
    "disk_bounded",
)


def test_soak_help() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "--cycles" in out.stdout and "--quick" in out.stdout


@pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("bwrap") is None
    or not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")),
    reason="the soak needs root (tmpfs, its own PostgreSQL cluster), bwrap and PostgreSQL",
)
def test_soak_tiny_run_reports_its_keys(tmp_path: Path) -> None:
    # --quick takes about a minute on a loaded 2-core machine: a tiny run keeps CI short
    # and still goes through every fault once (a kill, the full logs disk, the restart).
    figures = _last_json("soak.py", f"--cycles 4 --kills 1 --tmp {tmp_path}", tmp_path)
    for key in SOAK_KEYS:
        assert key in figures, key
    assert figures["cycles"] >= 4 and figures["kills"] >= 1
    assert figures["pushes_made"] == figures["pushes_expected"] > 0
    for bad in ("wrong_push_records", "duplicate_mails", "missing_mails", "lost_step_results"):
        assert figures[bad] == 0, (bad, figures)
    assert figures["disk_bounded"] is True
    assert figures["logs_disk_filled_and_freed"] and figures["postgres_restarted"]
    assert not any(tmp_path.glob("pushgate-soak-*"))  # cleaned up (and unmounted)
