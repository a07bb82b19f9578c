"""Harness overhead: a flight of J jobs x S steps on 8 local slots vs `make -j8`.

Prints both wall times and their ratio, with steps isolated (the default: one
bubblewrap sandbox a runner, namespaces of its own a job) and without
(runner.isolation = "none"), measured in the same run, with the CPU they cost (the
runner's, and the whole machine's), then the same flight with `sleep 0.05` steps
(isolated) as a share of the ideal wall time (J*S*0.05/8). The last line is JSON.

    python bench/overhead.py [--jobs 200] [--steps 5] [--slots 8] [--db URL]
                             [--repeat 3] [--tmp DIR]

The state (database, logs) goes in a new directory under DIR, by default the
current one: a flight creates a log file per step, and what that costs
varies tenfold between directories here (printed with the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pushgate import config as cfgmod  # noqa: E402
from pushgate.db.engine import Database  # noqa: E402
from pushgate.run.plan import new_flight  # noqa: E402
from pushgate.run.scheduler import run_flight  # noqa: E402


def make_repo(path: Path) -> None:
    path.mkdir(parents=True)
    env = {
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(path),
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@example.org",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@example.org",
        "PATH": "/usr/bin:/bin",
    }
    for args in (["init", "-q", "-b", "master"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)


def write_config(
    base: Path,
    jobs: int,
    steps: int,
    slots: int,
    cmd: list[str],
    db_url: str | None,
    state: str,
    isolation: str = "bwrap",
) -> Path:
    lines = ["[state]", f'dir = "{state}"']
    if db_url:
        lines.append(f'database = "{db_url}"')
    lines += ["[runner]", f'isolation = "{isolation}"']
    lines += [
        "[trees.t]",
        f'url = "{base / "repo"}"',
        'input_ref = "master"',
        "[branches.b]",
        'tree = "t"',
        'jobs = ["j*"]',
        "[hosts.localhost]",
        f"slots = {slots}",
        '[jobs."j{n}"]',
        f"matrix = {{ n = {json.dumps([str(i) for i in range(jobs)])} }}",
        "trees = []",
        "steps = [",
    ]
    for s in range(steps):
        lines.append(f'  {{ testid = "s{s}", command = {json.dumps(cmd)} }},')
    lines.append("]")
    path = base / "pushgate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


_runs = 0
# Above this, creating a file costs more than pushgate's own work for a step.
SLOW_CREATE_US = 150
# The runner's kernel CPU a step when creating files is cheap (0.08 ms on tmpfs,
# 0.1 ms on this machine's disk; 0.3-0.6 ms while ext4 skips deleted inodes).
SLOW_KERNEL_MS = 0.2


def _cpu() -> tuple[float, float, float, float]:
    """CPU seconds so far of this process, of its reaped children, of this process in
    the kernel (where creating files goes), and of the whole machine (the sandboxes'
    agents are not our reaped children, and the kernel's own work for namespaces runs
    in its threads)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, me.ru_stime, _busy()


def _busy() -> float:
    """CPU seconds the machine has been busy (all CPUs, /proc/stat; not idle or iowait)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def time_flight(
    base: Path,
    jobs: int,
    steps: int,
    slots: int,
    cmd: list[str],
    db_url: str | None,
    cpu: list[tuple[float, float, float, float]] | None = None,
    isolation: str = "bwrap",
) -> float:
    # A new state dir per run: deleting the last run's thousands of files just
    # before a timed run makes ext4 slow to create files (its allocator skips
    # recently deleted inodes), which would time the file system, not pushgate.
    global _runs
    _runs += 1
    loaded = cfgmod.load(
        write_config(base, jobs, steps, slots, cmd, db_url, f"state{_runs}", isolation)
    )
    db = Database(loaded.database_url)
    db.upgrade()
    flight = new_flight(db, loaded, "b")
    cpu0 = _cpu()
    t0 = time.perf_counter()
    statuses, _ = run_flight(db, loaded, flight)
    wall = time.perf_counter() - t0
    if cpu is not None:
        # The runner's own CPU, that of its children (the spawner helper and, through it,
        # unisolated steps' commands), and the machine's.
        cpu1 = _cpu()
        cpu.append((cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2], cpu1[3] - cpu0[3]))
    assert all(s == "pass" for s in statuses.values()), statuses
    db.dispose()
    return wall


def time_make(
    base: Path,
    jobs: int,
    steps: int,
    slots: int,
    cmd: list[str],
    cpu: list[tuple[float, float]] | None = None,
) -> float:
    mk = base / "Makefile"
    targets = [f"j{j}s{s}" for j in range(jobs) for s in range(steps)]
    rules = [f"all: {' '.join(targets)}"]
    for j in range(jobs):
        for s in range(steps):
            dep = f" j{j}s{s - 1}" if s else ""
            rules.append(f"j{j}s{s}:{dep}\n\t@{' '.join(cmd)}")
    rules.insert(0, ".PHONY: all " + " ".join(targets))
    mk.write_text("\n".join(rules) + "\n")
    cpu0 = _cpu()
    t0 = time.perf_counter()
    subprocess.run(["make", "-s", f"-j{slots}", "-f", str(mk), "all"], cwd=base, check=True)
    wall = time.perf_counter() - t0
    if cpu is not None:
        cpu1 = _cpu()
        cpu.append((cpu1[1] - cpu0[1], cpu1[3] - cpu0[3]))
    return wall


def file_create_us(base: Path, n: int = 500, name: str = "probe") -> float:
    """Mean cost of creating (and writing) one small file under base, in microseconds.

    It varies by an order of magnitude between directories of one ext4 file
    system on this kind of machine (a busy /tmp was measured at 740 us, the
    project's directory at 40 us), and a flight creates one log per step.
    """
    d = base / name
    d.mkdir()
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(d / f"{i}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, b"x" * 80)
        os.close(fd)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    ap.add_argument(
        "--tmp",
        default=".",
        help="where the state (logs, database) goes, e.g. /dev/shm to leave the disk out "
        "(default: the current directory, as a real state dir would be on the project's "
        "disk; the file-creation cost of the place is printed, as it weighs: a flight "
        "creates a log file per step)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each, interleaved; medians are reported (the machine is noisy)",
    )
    a = ap.parse_args()
    runs: dict[str, list[float]] = {
        "make": [],
        "flight": [],
        "flight_none": [],
        "sleep": [],
        "make_sleep": [],
    }
    with tempfile.TemporaryDirectory(dir=Path(a.tmp).resolve(), prefix=".bench-overhead-") as tmp:
        base = Path(tmp)
        create_us = file_create_us(base)
        make_cpu: list[tuple[float, float]] = []
        flight_cpu: list[tuple[float, float, float, float]] = []
        none_cpu: list[tuple[float, float, float, float]] = []
        make_repo(base / "repo")
        for _ in range(a.repeat):
            runs["make"].append(time_make(base, a.jobs, a.steps, a.slots, ["true"], make_cpu))
            runs["flight"].append(
                time_flight(base, a.jobs, a.steps, a.slots, ["true"], a.db, flight_cpu)
            )
            runs["flight_none"].append(
                time_flight(base, a.jobs, a.steps, a.slots, ["true"], a.db, none_cpu, "none")
            )
        for _ in range(max(1, a.repeat // 2)):
            runs["sleep"].append(
                time_flight(base, a.jobs, a.steps, a.slots, ["sleep", "0.05"], a.db)
            )
            # The same sleeps under make: what process start-up alone costs on this machine.
            runs["make_sleep"].append(time_make(base, a.jobs, a.steps, a.slots, ["sleep", "0.05"]))
        # Again at the end: the flights' own files may have slowed the place down.
        create_us_after = file_create_us(base, name="probe-after")
    make_s, flight_s, none_s, sleep_s, make_sleep_s = (
        statistics.median(runs[k]) for k in ("make", "flight", "flight_none", "sleep", "make_sleep")
    )
    ideal = a.jobs * a.steps * 0.05 / a.slots
    n = a.jobs * a.steps
    runner_cpu = statistics.median(c[0] for c in flight_cpu) / n * 1000
    child_cpu = statistics.median(c[1] for c in flight_cpu) / n * 1000
    runner_sys = statistics.median(c[2] for c in flight_cpu) / n * 1000
    none_runner_cpu = statistics.median(c[0] for c in none_cpu) / n * 1000
    none_child_cpu = statistics.median(c[1] for c in none_cpu) / n * 1000
    make_cpu_ms = statistics.median(c[0] for c in make_cpu) / n * 1000
    busy_make = statistics.median(c[1] for c in make_cpu) / n * 1000
    busy_iso = statistics.median(c[3] for c in flight_cpu) / n * 1000
    busy_none = statistics.median(c[3] for c in none_cpu) / n * 1000
    print(
        f"state in {Path(a.tmp).resolve()}: creating a file there takes {create_us:.0f} us "
        f"before the runs, {create_us_after:.0f} us after"
    )
    if max(create_us, create_us_after) > SLOW_CREATE_US or runner_sys > SLOW_KERNEL_MS:
        print(
            f"  warning: the file system weighs on these figures (over {SLOW_CREATE_US} us "
            f"to create a file, or over {SLOW_KERNEL_MS} ms of the runner's CPU a step in "
            "the kernel): a flight creates a log file per step and three dirs a job, and "
            "on ext4 without a journal creating them is slow for minutes after many files "
            "were deleted nearby, as by a previous run of this bench; compare with "
            "--tmp /dev/shm, or run again a few minutes later"
        )
    print(f"{a.jobs} jobs x {a.steps} steps of `true` on {a.slots} slots:")
    print(f"  make -j{a.slots}:  {make_s:.3f} s")
    print(
        f"  pushgate, steps isolated (namespaces a job): {flight_s:.3f} s  "
        f"({flight_s / n * 1000:.2f} ms per step), ratio {flight_s / make_s:.2f}"
    )
    print(
        f"  pushgate, runner.isolation = none:            {none_s:.3f} s  "
        f"({none_s / n * 1000:.2f} ms per step), ratio {none_s / make_s:.2f}"
    )
    print(
        f"  isolation costs {(flight_s - none_s) / a.jobs * 1000:.2f} ms a job  (medians of "
        f"{a.repeat}; make runs {', '.join(f'{x:.2f}' for x in runs['make'])}, isolated "
        f"{', '.join(f'{x:.2f}' for x in runs['flight'])}, unisolated "
        f"{', '.join(f'{x:.2f}' for x in runs['flight_none'])})"
    )
    print(
        f"  CPU per step: pushgate's runner {runner_cpu:.3f} ms isolated ({runner_sys:.3f} in "
        f"the kernel), {none_runner_cpu:.3f} ms unisolated; unisolated, its helper and the "
        f"commands {none_child_cpu:.3f} ms; make and the commands {make_cpu_ms:.3f} ms"
    )
    print(
        f"  the whole machine's CPU per step (all of it, the kernel's threads too): make "
        f"{busy_make:.3f} ms, isolated {busy_iso:.3f} ms, unisolated {busy_none:.3f} ms"
    )
    print(
        f"{a.jobs} jobs x {a.steps} steps of `sleep 0.05`: {sleep_s:.3f} s, ideal {ideal:.3f} s, "
        f"efficiency {ideal / sleep_s:.1%}"
    )
    print(
        f"  make -j{a.slots} runs the same sleeps in {make_sleep_s:.3f} s (efficiency "
        f"{ideal / make_sleep_s:.1%}): process start-up alone; pushgate / make = "
        f"{sleep_s / make_sleep_s:.2f}"
    )
    print(
        json.dumps(
            {
                "make_s": round(make_s, 4),
                "pushgate_s": round(flight_s, 4),
                "ratio_vs_make": round(flight_s / make_s, 3),
                "pushgate_isolated_s": round(flight_s, 4),
                "ratio_vs_make_isolated": round(flight_s / make_s, 3),
                "pushgate_unisolated_s": round(none_s, 4),
                "ratio_vs_make_unisolated": round(none_s / make_s, 3),
                "isolation_ms_per_job": round((flight_s - none_s) / a.jobs * 1000, 3),
                "ms_per_step": round(flight_s / n * 1000, 3),
                "sleep_flight_s": round(sleep_s, 4),
                "sleep_ideal_s": round(ideal, 4),
                "sleep_efficiency": round(ideal / sleep_s, 4),
                "make_sleep_s": round(make_sleep_s, 4),
                "make_sleep_efficiency": round(ideal / make_sleep_s, 4),
                "sleep_ratio_vs_make": round(sleep_s / make_sleep_s, 3),
                "runner_cpu_ms_per_step": round(runner_cpu, 3),
                "runner_sys_cpu_ms_per_step": round(runner_sys, 3),
                "children_cpu_ms_per_step": round(child_cpu, 3),
                "unisolated_children_cpu_ms_per_step": round(none_child_cpu, 3),
                "machine_cpu_ms_per_step_make": round(busy_make, 3),
                "machine_cpu_ms_per_step_isolated": round(busy_iso, 3),
                "machine_cpu_ms_per_step_unisolated": round(busy_none, 3),
                "make_cpu_ms_per_step": round(make_cpu_ms, 3),
                "file_create_us": round(create_us, 1),
                "file_create_us_after": round(create_us_after, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
