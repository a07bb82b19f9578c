"""Several runners on one flight (a farm sharing one database): each job runs once, no slot
is ever held by two jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from pushgate.db import flights as dbf
from pushgate.db.schema import host_allocations
from pushgate.run.plan import new_flight
from tests.flightkit import make_project


def test_two_runners_share_a_flight(tmp_path: Path, db_url: str) -> None:
    project = make_project(tmp_path, db_url)
    jobs = {
        f"j{i:02d}": {
            "trees": [],
            "steps": [{"testid": "a", "command": "sleep 0.1"}, {"testid": "b", "command": "true"}],
        }
        for i in range(16)
    }
    cfg = project.config(jobs, slots=3)
    loaded, db = project.load(jobs, slots=3)
    flight = new_flight(db, loaded, "b")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pushgate.cli",
                "-c",
                str(cfg),
                "flight",
                "run",
                str(flight),
                "-q",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with db.read() as conn:
        statuses = {j.job: j.status for j in dbf.get_jobs(conn, flight)}
        steps = dbf.get_steps(conn, flight)
        allocs = conn.execute(select(host_allocations)).all()
    assert set(statuses.values()) == {"pass"}
    assert len(steps) == 32  # every step exactly once
    assert sorted(a.job for a in allocs) == sorted(jobs)  # every job claimed exactly once
    for slot in {a.slot for a in allocs}:
        spans = sorted((a.allocated, a.released) for a in allocs if a.slot == slot)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end <= start
    points = sorted(t for a in allocs for t in (a.allocated, a.released))
    assert max(sum(1 for a in allocs if a.allocated <= t < a.released) for t in points) <= 3
