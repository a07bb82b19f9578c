"""Queue order across flights and workers: a host goes to bisection probes first, then
retests (waiting since their original flight), then gate flights, older first, whichever
worker and flight runner frees it. Two `pushgate worker` processes, one host with one
slot, four flights queued before they start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pushgate.db import flights as dbf
from pushgate.db import hosts as dbh
from pushgate.run.plan import new_flight
from tests.flightkit import make_project


def _farm(tmp_path: Path, db_url: str, njobs: int, sleep: float) -> tuple[Path, Any, Any]:
    project = make_project(tmp_path, db_url)
    jobs = {
        f"j{i}": {
            "trees": [],
            "hostflags": ["x"],
            "steps": [{"testid": "t", "command": f"sleep {sleep}"}],
        }
        for i in range(njobs)
    }
    extra = {
        "hosts": {"h1": {"slots": 1, "flags": ["x"]}},
        "runner": {"heartbeat_s": 0.5, "lease_s": 5, "isolation": "none"},
    }
    cfg = project.config(jobs, extra=extra)
    loaded, db = project.load(jobs, extra=extra)
    return cfg, loaded, db


def _workers(cfg: Path, n: int = 2) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "pushgate.cli", "-c", str(cfg), "worker", "--once", "-q"]
            + ["--name", f"w{i}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(n)
    ]


def _wait(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err


def test_host_goes_in_queue_order_across_flights(tmp_path: Path, db_url: str) -> None:
    cfg, loaded, db = _farm(tmp_path, db_url, 3, 0.05)
    gate1 = new_flight(db, loaded, "b")
    gate2 = new_flight(db, loaded, "b")
    # Newer, but ahead: a retest waits since its original flight (gate1), a probe first.
    retest = new_flight(db, loaded, "b", blessing="real-retest", parent_flight=gate1)
    probe = new_flight(db, loaded, "b", blessing="real-bisect")
    _wait(_workers(cfg))
    with db.read() as conn:
        order = [a.flight for a in reversed(dbh.allocations(conn, "h1"))]
        for f in (gate1, gate2, retest, probe):
            assert {j.status for j in dbf.get_jobs(conn, f)} == {"pass"}
    assert order == [probe] * 3 + [retest] * 3 + [gate1] * 3 + [gate2] * 3


def test_a_running_flight_leaves_the_host_to_a_better_one(tmp_path: Path, db_url: str) -> None:
    """A gate flight holding the host does not take it again for its next job when a
    bisection's probes came meanwhile: the host goes to them first."""
    cfg, loaded, db = _farm(tmp_path, db_url, 4, 1.5)
    gate = new_flight(db, loaded, "b")
    procs = _workers(cfg)
    deadline = time.monotonic() + 60
    while True:
        with db.read() as conn:
            if dbh.allocations(conn, "h1"):
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    probe = new_flight(db, loaded, "b", blessing="real-bisect", jobs="j[01]")
    _wait(procs)
    with db.read() as conn:
        order = [a.flight for a in reversed(dbh.allocations(conn, "h1"))]
    assert order == [gate] + [probe] * 2 + [gate] * 3
