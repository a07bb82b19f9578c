"""Wall time of one push-gate cycle, and the daemon's idle cost.

1. The demo project (a C program, 5 jobs): the first cycle (fetch, flight, report, push,
   mail) against a baseline of running an identical flight alone (`flight new` + `flight
   run` in process): the ratio is the gate's overhead.
2. `pushgate daemon --poll P` on that branch once nothing changes: CPU seconds (user+sys,
   its own and its reaped children's, e.g. git fetch) per minute, from /proc/<pid>/stat,
   over MEASURE_S seconds; baseline: a naive daemon that would start a `pushgate branch
   run` process per poll (its measured CPU cost times the polls per minute).

Usage: .venv/bin/python bench/gate_cycle.py [MEASURE_S] [POLL_S]
The last line of output is one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pushgate import config as cfgmod
from pushgate.daemon.cycle import run_cycle
from pushgate.db.engine import Database
from pushgate.demo.project import make_project, write_config
from pushgate.run.plan import new_flight
from pushgate.run.scheduler import run_flight

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """user+sys of a live process and of the children it has waited for, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def project(base: Path) -> cfgmod.Loaded:
    repo = base / "rpn"
    make_project(repo)
    return cfgmod.load(write_config(base, repo))


def main() -> None:
    measure_s = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    poll_s = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    tmp = Path(tempfile.mkdtemp(prefix="pushgate-bench-"))

    # Baseline: the same flight, alone.
    loaded = project(tmp / "alone")
    db = Database(loaded.database_url)
    db.upgrade()
    t0 = time.monotonic()
    f = new_flight(db, loaded, "rpn")
    run_flight(db, loaded, f)
    flight_s = time.monotonic() - t0
    db.dispose()

    loaded = project(tmp / "gate")
    db = Database(loaded.database_url)
    db.upgrade()
    t0 = time.monotonic()
    res = run_cycle(db, loaded, "rpn")
    cycle_s = time.monotonic() - t0
    assert res.push is not None and res.push.status == "pushed", res
    t0 = time.monotonic()
    idle = run_cycle(db, loaded, "rpn")
    idle_cycle_s = time.monotonic() - t0
    assert idle.action == "idle"
    db.dispose()
    print(f"flight alone:            {flight_s:7.2f} s wall")
    print(f"one gate cycle:          {cycle_s:7.2f} s wall  ({cycle_s / flight_s:.2f}x the flight)")
    print(f"idle cycle (in process): {idle_cycle_s:7.3f} s wall")

    cli = [sys.executable, "-m", "pushgate.cli", "-c", str(loaded.path)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([*cli, "branch", "run", "-q", "rpn"], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    naive_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    naive_per_min = naive_cpu * 60.0 / poll_s
    print(f"one idle `branch run` process: {naive_cpu:.3f} s CPU")

    d = subprocess.Popen(
        [*cli, "daemon", "--poll", str(poll_s)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(min(5.0, measure_s / 4))  # startup: imports, migrations, first check
        c0, t0 = cpu_of(d.pid), time.monotonic()
        time.sleep(measure_s)
        c1, t1 = cpu_of(d.pid), time.monotonic()
    finally:
        d.send_signal(signal.SIGTERM)
        rc = d.wait(60)
    per_min = (c1 - c0) * 60.0 / (t1 - t0)
    print(
        f"daemon idle, poll {poll_s:g} s: {per_min:.3f} CPU s/min over {t1 - t0:.0f} s "
        f"(naive process per poll: {naive_per_min:.3f} CPU s/min, "
        f"ratio {per_min / naive_per_min:.3f}); exit {rc}"
    )
    print(
        json.dumps(
            {
                "flight_alone_s": round(flight_s, 3),
                "gate_cycle_s": round(cycle_s, 3),
                "gate_cycle_over_flight": round(cycle_s / flight_s, 3),
                "idle_cycle_s": round(idle_cycle_s, 4),
                "daemon_poll_s": poll_s,
                "daemon_idle_cpu_s_per_min": round(per_min, 4),
                "naive_cpu_s_per_min": round(naive_per_min, 4),
                "daemon_over_naive": round(per_min / naive_per_min, 4),
                "daemon_exit": rc,
            }
        )
    )


if __name__ == "__main__":
    main()
