"""Farm scheduling on PostgreSQL: allocations per second with 1, 2 and 4 `pushgate worker`
processes, 50 hosts (one slot each, mixed flags) and 1,000 no-op jobs; and the CPU the
scheduler spends per allocation decision.

    python bench/farm.py [--jobs 1000] [--hosts 50] [--pg URL]

Each run gets a fresh schema; workers run with `--once` and steps unisolated (`true`),
so what is measured is claiming, recording and releasing. Allocations/s is the number
of allocations over the span from the first to the last (host_allocations timestamps).
CPU per allocation: the workers' whole CPU (user + system, from their rusage) per job,
and, in this process, the client CPU of one claim transaction (claim_job + claim_slot
with FOR UPDATE SKIP LOCKED) per allocation. Target: >= 100 allocations/s with 4 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pushgate import config as cfgmod  # noqa: E402
from pushgate.db import flights as dbf  # noqa: E402
from pushgate.db import hosts as dbh  # noqa: E402
from pushgate.db.engine import Database  # noqa: E402
from pushgate.db.schema import host_allocations  # noqa: E402
from pushgate.run.plan import new_flight  # noqa: E402
from tests.flightkit import make_project, render_toml  # noqa: E402

PG = os.environ.get("PUSHGATE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _schema(pg: str) -> tuple[str, str]:
    schema = "bench_" + uuid.uuid4().hex[:10]
    with create_engine(pg).begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in pg else "?"
    return f"{pg}{sep}options=-csearch_path%3D{schema}", schema


def _drop(pg: str, schema: str) -> None:
    with create_engine(pg).begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def _config(tmp: Path, url: str, njobs: int, nhosts: int) -> Path:
    project = make_project(tmp, url)
    arches = ["amd64", "arm64"]
    data = {
        "state": {"dir": "state", "database": url},
        "runner": {"heartbeat_s": 1, "lease_s": 10, "isolation": "none"},
        "trees": {
            "src": {"url": str(project.repo.path), "input_ref": "main", "tested_ref": "tested"}
        },
        "branches": {"b": {"tree": "src", "jobs": ["j-*"]}},
        "hosts": {
            f"h{i}": {"slots": 1, "flags": [f"arch-{arches[i % 2]}", f"rack-{i % 5}"]}
            for i in range(nhosts)
        },
        "jobs": {
            "j-{arch}-{n}": {
                "matrix": {"arch": arches, "n": [str(n) for n in range(njobs // 2)]},
                "trees": [],
                "hostflags": ["arch-{arch}"],
                "steps": [{"testid": "noop", "command": ["true"]}],
            }
        },
    }
    path = tmp / "pushgate.toml"
    path.write_text(render_toml(data))
    return path


def run_workers(pg: str, nworkers: int, njobs: int, nhosts: int) -> dict[str, float]:
    url, schema = _schema(pg)
    try:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
            cfg = _config(Path(d), url, njobs, nhosts)
            loaded = cfgmod.load(cfg)
            db = Database(url)
            db.upgrade()
            flight = new_flight(db, loaded, "b")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "pushgate.cli", "--config", str(cfg)]
                    + ["worker", "--once", "-q", "--name", f"bench{i}"],
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                for i in range(nworkers)
            ]
            for p in procs:
                if p.wait() != 0:
                    raise SystemExit(f"a worker exited {p.returncode}")
            wall = time.monotonic() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            with db.read() as conn:
                times = sorted(
                    r.allocated
                    for r in conn.execute(
                        select(host_allocations.c.allocated).where(
                            host_allocations.c.flight == flight
                        )
                    )
                )
                statuses = {j.status for j in dbf.get_jobs(conn, flight)}
            db.dispose()
            assert statuses == {"pass"}, statuses
            span = times[-1] - times[0]
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return {
                "allocations": len(times),
                "span_s": span,
                "wall_s": wall,
                "allocations_per_s": (len(times) - 1) / span if span > 0 else float("inf"),
                "worker_cpu_ms_per_job": 1000 * cpu / len(times),
            }
    finally:
        _drop(pg, schema)


def claim_cpu(pg: str, nhosts: int, nclaims: int = 500) -> float:
    """Client CPU (ms) of one claim transaction: claim a queued job and a slot of one of
    its eligible hosts (FOR UPDATE SKIP LOCKED), then release it, as a runner does."""
    url, schema = _schema(pg)
    try:
        db = Database(url)
        db.upgrade()
        with db.write() as conn:
            dbh.sync_hosts(conn, {f"h{i}": ("local", 1, ["arch-amd64"]) for i in range(nhosts)})
            flight = dbf.create_flight(
                conn,
                branch="b",
                intended="real",
                bless_as="real",
                revisions={},
                new_jobs=[dbf.NewJob(f"j{i}", {}, {}) for i in range(nclaims)],
            )
        names = [f"h{i}" for i in range(nhosts)]
        cpu = 0.0
        for i in range(nclaims):
            c0 = time.thread_time()
            with db.write() as conn:
                a = dbf.claim_job(conn, flight, f"j{i}", "bench", time.time() + 30)
                assert a is not None
                claim = dbh.claim_slot(
                    conn, names, flight, f"j{i}", "bench", time.time() + 30, attempt=a
                )
                assert claim is not None
            cpu += time.thread_time() - c0
            with db.write() as conn:
                dbh.release_slot(conn, claim, flight, f"j{i}")
        db.dispose()
        return 1000 * cpu / nclaims
    finally:
        _drop(pg, schema)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--pg", default=PG)
    args = ap.parse_args()
    results: dict[str, object] = {"jobs": args.jobs, "hosts": args.hosts}
    rates = {}
    for n in (1, 2, 4):
        r = run_workers(args.pg, n, args.jobs, args.hosts)
        rates[n] = r["allocations_per_s"]
        print(
            f"{n} worker(s): {r['allocations']} allocations in {r['span_s']:.2f}s "
            f"({r['allocations_per_s']:.0f}/s; wall {r['wall_s']:.2f}s with start-up), "
            f"worker CPU {r['worker_cpu_ms_per_job']:.2f} ms/job"
        )
        results[f"allocations_per_s_{n}_workers"] = round(r["allocations_per_s"], 1)
        results[f"worker_cpu_ms_per_job_{n}_workers"] = round(r["worker_cpu_ms_per_job"], 3)
    cpu = claim_cpu(args.pg, args.hosts)
    print(f"claim transaction: {cpu:.3f} ms client CPU per allocation decision")
    print(
        f"ratios: 2 workers / 1 = {rates[2] / rates[1]:.2f}, 4 workers / 1 = "
        f"{rates[4] / rates[1]:.2f}; 4 workers vs the 100/s target = {rates[4] / 100:.1f}x"
    )
    results["claim_cpu_ms_per_allocation"] = round(cpu, 4)
    results["ratio_2_workers_vs_1"] = round(rates[2] / rates[1], 2)
    results["ratio_4_workers_vs_1"] = round(rates[4] / rates[1], 2)
    results["target_allocations_per_s_4_workers"] = 100
    results["target_met"] = rates[4] >= 100
    print(json.dumps(results))


if __name__ == "__main__":
    main()
