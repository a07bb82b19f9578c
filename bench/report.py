"""Benchmark: classify one flight with ~30 failures on a long history.

A synthetic history of N flights x 100 jobs (10 builds, 90 tests) x 10 steps is bulk
loaded into SQLite (executemany, synchronous=OFF while loading) and PostgreSQL (COPY),
then the report of one flight is timed at N/10 flights and again at N flights (the same
database, grown in between; the report scenario is appended at the end each time):

  31 failures in the reported flight F: 5 `never pass` probes, 5 `like`, 10 `REGR.`,
  5 heisenbugs (passed in a sibling flight S of the same target, which is then examined
  in heisen mode: 5 `fail in S pass in F`), 1 build `REGR.` and its 5 `blocked n/a`.

Background flights test a new revision every 4 flights; a few random failures.

    .venv/bin/python bench/report.py [--flights 10000] [--db sqlite|postgresql|both]

Prints the load times, the report times (median of --repeat runs after one warm-up)
and their ratio; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from pushgate.db.engine import Database  # noqa: E402
from pushgate.db.history import compute_flight_built  # noqa: E402
from pushgate.judge.classify import classify  # noqa: E402

BRANCH = "xen-unstable"
N_BUILDS = 10
N_TESTS = 90
T0 = 1_600_000_000.0
FLIGHT_GAP_S = 3 * 3600.0
PG_URL = os.environ.get("PUSHGATE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

BUILDS = [f"build-{a}" for a in ("amd64", "i386", "armhf", "arm64")] + [
    f"build-amd64-v{i}" for i in range(N_BUILDS - 4)
]
TESTS = [f"test-amd64-amd64-t{i:02d}" for i in range(N_TESTS)]
BUILD_STEPS = [
    "hosts-allocate",
    "host-install(2)",
    "host-build-prep",
    "xen-build",
    "xen-build/dist",
    "syms-build",
    "tools-build",
    "docs-build",
    "capture-logs",
    "leak-check",
]
TEST_STEPS = [
    "build-check(1)",
    "hosts-allocate",
    "host-install(3)",
    "xen-install",
    "xen-boot",
    "guest-start",
    "guest-localmigrate",
    "guest-saverestore",
    "guest-stop",
    "migrate-support-check",
]


def rev(n: int) -> str:
    return f"{n:040x}"


def dep_of(t: int) -> int:
    """Tests 85..89 use the last build (which fails in F); others spread over the rest."""
    return N_BUILDS - 1 if t >= N_TESTS - 5 else t % (N_BUILDS - 1)


class Rows:
    """Rows of one batch of flights, per table, in COPY/executemany column order."""

    def __init__(self) -> None:
        self.flights: list[tuple[Any, ...]] = []
        self.revs: list[tuple[Any, ...]] = []
        self.built: list[tuple[Any, ...]] = []
        self.jobs: list[tuple[Any, ...]] = []
        self.runvars: list[tuple[Any, ...]] = []
        self.deps: list[tuple[Any, ...]] = []
        self.steps: list[tuple[Any, ...]] = []


# Step outcome per (test index): stepno -> status, None = absent after a fatal failure.
Plan = dict[int, dict[int, str]]


def add_flight(
    rows: Rows,
    flight: int,
    revision: str,
    baseline: str,
    *,
    blessing: str = "real",
    plan: Plan | None = None,
    failed_builds: frozenset[int] = frozenset(),
    rnd: random.Random | None = None,
    built_rows: bool = True,
) -> None:
    """One flight of 100 jobs x 10 steps. `plan` overrides test step statuses."""
    created = T0 + flight * FLIGHT_GAP_S
    rows.flights.append(
        (flight, BRANCH, blessing, "real", blessing, created, created + 1, created + 7200, None)
    )
    rows.revs.append((flight, "xen", revision, "https://example.org/xen.git", baseline))
    if built_rows:
        rows.built.append((flight, "xen", revision))
    for b, name in enumerate(BUILDS):
        status = "fail" if b in failed_builds else "pass"
        rows.jobs.append((flight, name, status, b, created + 1, created + 1801, 0))
        rows.runvars.append((flight, name, "revision_xen", revision, False))
        rows.runvars.append((flight, name, "built_revision_xen", revision, True))
        for s, testid in enumerate(BUILD_STEPS, 1):
            st = "fail" if (b in failed_builds and testid == "xen-build") else "pass"
            t = created + 1 + s * 180
            rows.steps.append((flight, name, s, testid, st, True, t, t + 180, None, None))
            if st != "pass":
                break
    for t_i, name in enumerate(TESTS):
        dep = dep_of(t_i)
        statuses: dict[int, str] = {}
        if dep in failed_builds:
            statuses = {1: "blocked"}
        else:
            statuses = {s: "pass" for s in range(1, 11)}
            if t_i < 5:
                statuses[10] = "fail"  # probe that never passes (non-fatal)
            if 5 <= t_i < 10 and flight % 4 == 1:
                statuses[9] = "fail"  # guest-stop fails once per revision: `like`
            if rnd is not None and rnd.random() < 0.002:
                at = rnd.randint(5, 9)
                statuses = {s: st for s, st in statuses.items() if s < at} | {at: "fail"}
            if plan and t_i in plan:
                statuses = plan[t_i]
        job_status = "pass"
        for s in sorted(statuses):
            if statuses[s] != "pass" and s != 10:
                job_status = statuses[s]
                break
        rows.jobs.append(
            (flight, name, job_status, N_BUILDS + t_i, created + 1801, created + 3600, 0)
        )
        rows.runvars.append((flight, name, "revision_xen", revision, False))
        rows.runvars.append((flight, name, "buildjob", BUILDS[dep], False))
        rows.deps.append((flight, name, "buildjob", flight, BUILDS[dep]))
        for s in sorted(statuses):
            t = created + 1801 + s * 150
            rows.steps.append(
                (flight, name, s, TEST_STEPS[s - 1], statuses[s], s != 10, t, t + 150, None, None)
            )


COLUMNS = {
    "flights": "flight, branch, blessing, intended, bless_as, created, started, finished, "
    "parent_flight",
    "flight_revisions": "flight, tree, revision, url, baseline",
    "flight_built": "flight, tree, revision",
    "jobs": "flight, job, status, ordinal, started, finished, attempts",
    "runvars": "flight, job, name, value, synth",
    "job_deps": "flight, job, name, dep_flight, dep_job",
    "steps": "flight, job, stepno, testid, status, fatal, started, finished, log, reason",
}


def tables(rows: Rows) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    yield "flights", rows.flights
    yield "flight_revisions", rows.revs
    yield "flight_built", rows.built
    yield "jobs", rows.jobs
    yield "runvars", rows.runvars
    yield "job_deps", rows.deps
    yield "steps", rows.steps


def load(db: Database, rows: Rows) -> None:
    """Bulk insert: executemany on SQLite, COPY on PostgreSQL."""
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if db.is_sqlite:
            cur.execute("PRAGMA synchronous=OFF")
            cur.execute("BEGIN")
            for table, data in tables(rows):
                if data:
                    marks = ", ".join("?" * len(data[0]))
                    cur.executemany(
                        f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({marks})", data
                    )
            cur.execute("COMMIT")
        else:
            for table, data in tables(rows):
                if data:
                    with cur.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as cp:
                        for r in data:
                            cp.write_row(r)
            raw.commit()
    finally:
        raw.close()


def grow(db: Database, start: int, stop: int, seed: int) -> float:
    """Background flights start..stop-1: a new revision every 4 flights."""
    rnd = random.Random(seed)
    t = time.perf_counter()
    batch = 200
    for lo in range(start, stop, batch):
        rows = Rows()
        for f in range(lo, min(stop, lo + batch)):
            add_flight(rows, f, rev(f // 4 + 1), rev(f // 4), rnd=rnd)
        load(db, rows)
    return time.perf_counter() - t


def scenario(db: Database, start: int) -> tuple[int, str, str]:
    """The report scenario after flight start-1: siblings S and F of a new target."""
    # The last revision tested by 4 whole background flights (one failed guest-stop).
    baseline = rev((start - 1) // 4)
    target = rev(10**9 + start)
    ok = {s: "pass" for s in range(1, 11)}

    def upto(at: int) -> dict[int, str]:
        return {s: "pass" for s in range(1, at)} | {at: "fail"}

    s_plan: Plan = {t: upto(6) for t in range(10, 20)}
    s_plan.update({t: upto(7) for t in range(25, 30)})
    f_plan: Plan = {t: upto(6) for t in range(10, 25)}
    f_plan.update({t: ok for t in range(25, 30)})
    f_plan.update({t: ok | {9: "fail"} for t in range(5, 10)})
    s_flight, f_flight = start, start + 1
    rows = Rows()
    add_flight(rows, s_flight, target, baseline, plan=s_plan, built_rows=False)
    add_flight(
        rows,
        f_flight,
        target,
        baseline,
        plan=f_plan,
        failed_builds=frozenset({N_BUILDS - 1}),
        built_rows=False,
    )
    load(db, rows)
    with db.write() as conn:
        compute_flight_built(conn, s_flight)
        compute_flight_built(conn, f_flight)
    return f_flight, target, baseline


def analyse(db: Database) -> None:
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def time_report(db: Database, flight: int, this: str, that: str, repeat: int) -> dict[str, Any]:
    render: Any = None
    try:
        from pushgate.publish.text import ReportContext, render_text

        def render(c: Any) -> str:
            return render_text(c, ReportContext(logs_url="http://logs.example.org/"))
    except ImportError:
        pass

    def once() -> tuple[float, Any]:
        t = time.perf_counter()
        c = classify(db, flight, this={"xen": this}, that={"xen": that})
        if render is not None:
            render(c)  # the mail body, as the report command makes it
        return time.perf_counter() - t, c

    first, c = once()
    times = [once()[0] for _ in range(repeat)]
    cats: dict[str, int] = {}
    for f in c.all_failures:
        if f.in_flight is None:
            cats[f.summary.split(" ")[0]] = cats.get(f.summary.split(" ")[0], 0) + 1
    return {
        "first_s": first,
        "median_s": statistics.median(times),
        "failures_main": sum(1 for f in c.all_failures if f.in_flight is None),
        "printed": len(c.failures),
        "heisen_flights": c.heisen_flights,
        "subject": c.subject,
        "summary_words": cats,
        "rendered": render is not None,
    }


def run_one(kind: str, flights: int, repeat: int, keep: bool, workdir: Path) -> dict[str, Any]:
    small = max(flights // 10, 10)
    cleanup = None
    if kind == "sqlite":
        path = workdir / f"bench-{flights}.db"
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        schema = "bench_" + uuid.uuid4().hex[:10]
        admin = create_engine(PG_URL)
        with admin.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"

        def cleanup() -> None:
            if not keep:
                with admin.begin() as c:
                    c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()

    db = Database(url)
    db.upgrade()
    out: dict[str, Any] = {}
    try:
        load_small = grow(db, 1, small + 1, seed=1)
        f1, this1, that1 = scenario(db, small + 1)
        analyse(db)
        print(f"[{kind}] loaded {small} flights in {load_small:.1f}s", flush=True)
        r1 = time_report(db, f1, this1, that1, repeat)
        print(f"[{kind}] report at {small} flights: {json.dumps(r1)}", flush=True)
        load_big = grow(db, small + 3, flights + 1, seed=2)
        f2, this2, that2 = scenario(db, flights + 1)
        t = time.perf_counter()
        analyse(db)
        print(
            f"[{kind}] grew to {flights} flights in {load_big:.1f}s "
            f"(analyse {time.perf_counter() - t:.1f}s)",
            flush=True,
        )
        r2 = time_report(db, f2, this2, that2, repeat)
        print(f"[{kind}] report at {flights} flights: {json.dumps(r2)}", flush=True)
        with db.read() as conn:
            nsteps = conn.execute(text("SELECT count(*) FROM steps")).scalar_one()
        print(f"[{kind}] steps rows: {nsteps}", flush=True)
        out = {
            "small": small,
            "load_s_small": load_small,
            "load_s_big": load_big,
            "report_s_small": r1["median_s"],
            "report_s_big": r2["median_s"],
            "first_s_big": r2["first_s"],
            "steps": nsteps,
        }
    finally:
        db.dispose()
        if cleanup is not None:
            cleanup()
        elif not keep and kind == "sqlite":
            for p in workdir.glob(f"bench-{flights}.db*"):
                p.unlink()
    return out


def label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else str(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flights", type=int, default=10000)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pushgate-bench"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    result: dict[str, Any] = {}
    for kind in kinds:
        r = run_one(kind, args.flights, args.repeat, args.keep, args.workdir)
        s, b = label(r["small"]), label(args.flights)
        ratio = r["report_s_big"] / r["report_s_small"]
        print(
            f"[{kind}] report {s}: {r['report_s_small'] * 1000:.1f} ms, "
            f"{b}: {r['report_s_big'] * 1000:.1f} ms, ratio {ratio:.2f}",
            flush=True,
        )
        result[f"report_s_{s}_{kind}"] = round(r["report_s_small"], 4)
        result[f"report_s_{b}_{kind}"] = round(r["report_s_big"], 4)
        result[f"ratio_{b}_vs_{s}_{kind}"] = round(ratio, 3)
        result[f"first_report_s_{b}_{kind}"] = round(r["first_s_big"], 4)
        result[f"load_s_{b}_{kind}"] = round(r["load_s_small"] + r["load_s_big"], 1)
        result[f"step_rows_{kind}"] = r["steps"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
