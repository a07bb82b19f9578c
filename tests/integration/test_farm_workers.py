"""Workers on PostgreSQL: 4 `pushgate worker` processes, 300 queued jobs, 10 hosts with
mixed flags. Every job finishes; the allocation history shows no slot held by two jobs at
once, no host over its slots, and no job run twice. Then one worker is kill -9'ed midway:
its jobs are taken back after their lease (the workers are named as other machines, so
only the lease tells), nothing is lost, still no double booking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.db.schema import host_allocations, workers
from pushgate.db.schema import jobs as jobs_t
from pushgate.run.plan import new_flight
from tests.flightkit import Project, make_project

PUSHGATE = [sys.executable, "-m", "pushgate.cli"]
LEASE_S = 3.0


def _farm(project: Project, step: str) -> tuple[Path, object, Database]:
    hosts = {
        **{f"amd{i}": {"slots": 1, "flags": ["arch-amd64"]} for i in range(5)},
        **{f"arm{i}": {"slots": 1, "flags": ["arch-arm64"]} for i in range(3)},
        # Shareable hosts: two jobs at once, each its own slot.
        **{f"big{i}": {"slots": 2, "flags": ["arch-amd64", "big"]} for i in range(2)},
    }
    jobs = {
        "j-{arch}-{n}": {
            "matrix": {"arch": ["amd64", "arm64"], "n": [str(n) for n in range(150)]},
            "trees": [],
            "hostflags": ["arch-{arch}"],
            "steps": [{"testid": "noop", "command": step}],
        }
    }
    extra = {
        "hosts": hosts,
        "runner": {"heartbeat_s": 0.5, "lease_s": LEASE_S, "isolation": "none"},
    }
    loaded, db = project.load(jobs, branch_jobs=["j-*"], extra=extra)
    return project.dir / "pushgate.toml", loaded, db


def _start(config: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*PUSHGATE, "--config", str(config), "worker", "--once", "-q", "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )


def _check_allocations(db: Database, flight: int, slots: dict[str, int]) -> dict[str, list]:
    with db.read() as conn:
        q = select(host_allocations).where(host_allocations.c.flight == flight)
        allocs = list(conn.execute(q))
    by_slot: dict[tuple[str, int], list] = defaultdict(list)
    by_job: dict[str, list] = defaultdict(list)
    for a in allocs:
        assert a.released is not None, f"{a.job} still holds {a.host}"
        by_slot[(a.host, a.slot)].append(a)
        by_job[a.job].append(a)
    # No slot held by two jobs at once.
    for key, rows in by_slot.items():
        rows.sort(key=lambda a: a.allocated)
        for x, y in zip(rows, rows[1:], strict=False):
            assert x.released <= y.allocated, f"{key}: {x.job} and {y.job} overlap"
    # No host over its slots at any instant.
    for host, n in slots.items():
        edges = sorted(
            [(a.allocated, 1) for a in allocs if a.host == host]
            + [(a.released, -1) for a in allocs if a.host == host]
        )
        held = 0
        for _, d in edges:
            held += d
            assert held <= n, f"{host} held by {held} jobs, has {n} slots"
    # A job's attempts never overlap: it never ran twice at once.
    for job, rows in by_job.items():
        rows.sort(key=lambda a: a.allocated)
        for x, y in zip(rows, rows[1:], strict=False):
            assert x.released <= y.allocated and x.attempt < y.attempt, job
    return by_job


def _slots(loaded: object) -> dict[str, int]:
    return {n: h.slots for n, h in loaded.cfg.hosts.items()}  # type: ignore[attr-defined]


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Project:
    if not db_url.startswith("postgresql"):
        pytest.skip("workers on many machines share PostgreSQL")
    return make_project(tmp_path, db_url)


def test_four_workers_300_jobs(project: Project) -> None:
    config, loaded, db = _farm(project, "true")
    flight = new_flight(db, loaded, "b")
    started = time.monotonic()
    procs = [_start(config, f"w{i}") for i in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    took = time.monotonic() - started
    with db.read() as conn:
        jobs = dbf.get_jobs(conn, flight)
        steps = dbf.get_steps(conn, flight)
        info = dbf.get_flight(conn, flight)
        ran = {r.worker for r in conn.execute(select(workers))}
    assert len(jobs) == 300 and {j.status for j in jobs} == {"pass"}
    assert info is not None and info.finished is not None
    by_job = _check_allocations(db, flight, _slots(loaded))
    # Each job allocated once, one step row: run exactly once.
    assert sorted(len(v) for v in by_job.values()) == [1] * 300
    assert len(steps) == 300
    # Every worker took part (the load was shared), and arm jobs ran only on arm hosts.
    assert {a[0].job.split("-")[1] for a in by_job.values() if a[0].host.startswith("arm")} == {
        "arm64"
    }
    assert len({r.split(":")[0] for r in ran}) == 4
    print(f"300 jobs on 4 workers: {took:.1f}s")


def test_worker_killed_midway(project: Project) -> None:
    config, loaded, db = _farm(project, "sleep 0.2")
    flight = new_flight(db, loaded, "b")
    procs = {f"w{i}": _start(config, f"w{i}") for i in range(4)}
    # Wait until a fifth of the jobs are done, then kill -9 a worker that holds jobs.
    deadline = time.monotonic() + 60
    victim = None
    while time.monotonic() < deadline and victim is None:
        time.sleep(0.2)
        with db.read() as conn:
            jobs = dbf.get_jobs(conn, flight)
            q = select(host_allocations).where(host_allocations.c.released.is_(None))
            held = list(conn.execute(q))
            runners = {
                r.worker: r.worker.split(":")[0]
                for r in conn.execute(select(workers).where(workers.c.stopped.is_(None)))
            }
        done = sum(j.status == "pass" for j in jobs)
        if done >= 60 and held:
            busy = {j.job for j in jobs if j.status in ("preparing", "running")}
            with db.read() as conn:
                holders = {
                    r.runner
                    for r in conn.execute(
                        select(jobs_t.c.runner).where(
                            jobs_t.c.flight == flight, jobs_t.c.job.in_(busy)
                        )
                    )
                }
            for worker_id, name in runners.items():
                if worker_id in holders:
                    victim = name
                    break
    assert victim is not None, "no worker held a job midway"
    # Stopped first: between reading the jobs it holds and killing it, it could finish one
    # (its commit made, the job then allocated once, not twice).
    procs[victim].send_signal(signal.SIGSTOP)
    with db.read() as conn:
        victim_id = next(w for w, n in runners.items() if n == victim)
        lost_jobs = {
            r.job
            for r in conn.execute(
                select(jobs_t.c.job).where(
                    jobs_t.c.runner == victim_id,
                    jobs_t.c.status.in_(["preparing", "running"]),
                )
            )
        }
    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.time()
    procs[victim].wait()
    for name, p in procs.items():
        if name == victim:
            continue
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with db.read() as conn:
        jobs = dbf.get_jobs(conn, flight)
        steps = dbf.get_steps(conn, flight)
        wrow = conn.execute(select(workers).where(workers.c.worker == victim_id)).one()
    assert len(jobs) == 300 and {j.status for j in jobs} == {"pass"}, "a job was lost"
    by_job = _check_allocations(db, flight, _slots(loaded))
    assert len(steps) == 300  # the killed attempts' step rows were dropped at requeue
    assert lost_jobs
    for job in lost_jobs:
        rows = sorted(by_job[job], key=lambda a: a.allocated)
        assert len(rows) == 2, (job, rows)
        # Taken back only once the lease had run out (no worker of "another machine" is
        # presumed dead sooner), then run once more.
        assert rows[0].released >= killed_at + LEASE_S - 1.0, job
    # Every other job ran once.
    assert all(len(v) == 1 for j, v in by_job.items() if j not in lost_jobs)
    assert wrow.stopped is not None and "lease" in (wrow.why or "")
