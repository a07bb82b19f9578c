"""The real bisector: `real-bisect` flights driven by the stateless search (spec §2, §5.5, §10).

All state is in the database: the `bisections` row (endpoints, host, status) and the flights.
Each round recomputes the graph's observations from every flight of the branch that ran the
job at a tuple of the graph, asks `search.step` what to do, and either finishes (report, SVG,
mail) or makes one `real-bisect` flight per probe and runs it. A process killed at any point
resumes from the same row: unfinished probe flights are run first, finished ones are evidence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from pushgate.bisect import report as rep
from pushgate.bisect.graph import GraphError, Node, RevGraph, TreeHistory, build_tuple_graph
from pushgate.bisect.posterior import (
    FlakeGrid,
    Observation,
    build_index,
    compute_posterior,
    flake_grid,
)
from pushgate.bisect.result import BisectResult, TraceRow
from pushgate.bisect.search import EXIT_CODES, Outcome, Probes, SearchParams, step, swapped
from pushgate.config import Loaded
from pushgate.db import bisections as dbb
from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.errors import PushgateError
from pushgate.git import GitError, Mirror, check_ref
from pushgate.judge import verdicts
from pushgate.paths import job_artifacts, mirror
from pushgate.run.plan import FlightError, Tuple, job_runvars, plan_jobs
from pushgate.run.scheduler import run_flight

Say = Callable[[str], None]


class BisectError(PushgateError):
    """A bisection cannot start (no failure/pass pair, unknown tree or revision...)."""


class BisectStopped(PushgateError):
    """The search was asked to stop (a signal): its probe flights resume next time."""


@dataclass(frozen=True)
class Endpoints:
    basis: dict[str, str]
    latest: dict[str, str]
    basis_flight: int | None
    latest_flight: int | None
    host: str


def _say_nothing(_: str) -> None:
    return None


# ---------------------------------------------------------------- endpoints and graph


def find_endpoints(db: Database, loaded: Loaded, branch: str, job: str, testid: str) -> Endpoints:
    """Latest failure: the newest finished `real`/`real-retest` flight where the step failed;
    basis pass: the newest older one where it passed (osstest §7.2, simplified to one host)."""
    with db.read() as conn:
        runs = dbb.step_runs(conn, branch, job, testid, ("real", "real-retest"))
    done = [r for r in runs if r.finished and r.job_status != "broken"]
    fail = next((r for r in reversed(done) if r.step_status == "fail"), None)
    if fail is None:
        raise BisectError("No appropriate failure/pass pair found.")
    good = next(
        (r for r in reversed(done) if r.flight < fail.flight and r.step_status == "pass"), None
    )
    if good is None:
        raise BisectError("No appropriate failure/pass pair found.")
    return Endpoints(
        good.revisions, fail.revisions, good.flight, fail.flight, fail.host or _default_host(loaded)
    )


def _default_host(loaded: Loaded) -> str:
    return sorted(loaded.cfg.hosts)[0] if loaded.cfg.hosts else "localhost"


def _mirror(loaded: Loaded, tree: str) -> Mirror:
    if tree not in loaded.trees:
        raise BisectError(f"unknown tree {tree!r}")
    m = mirror(loaded, tree)
    if not m.exists():
        m.ensure()
        m.fetch()
    return m


def resolve_revs(loaded: Loaded, spec: dict[str, str], fill: dict[str, str]) -> dict[str, str]:
    """TREE=REV overrides on top of `fill`, each REV resolved to a full commit hash."""
    out = dict(fill)
    for tree, rev in spec.items():
        m = _mirror(loaded, tree)
        try:
            sha = m.resolve(check_ref(rev))
        except GitError:
            m.fetch()
            try:
                sha = m.resolve(check_ref(rev))
            except GitError as e:
                raise BisectError(f"{tree}={rev}: {e}") from None
        out[tree] = sha
    return out


def tuple_graph(loaded: Loaded, basis: dict[str, str], latest: dict[str, str]) -> RevGraph:
    """Per-tree histories from the mirrors (`parents_graph`) coalesced into the tuple DAG."""
    trees = sorted(set(basis) & set(latest))
    if not trees:
        raise BisectError("basis and latest flights share no tree")
    hist: dict[str, TreeHistory] = {}
    for t in trees:
        m = _mirror(loaded, t)
        try:
            rg = m.parents_graph(basis[t], latest[t])
        except GitError:
            m.fetch()
            rg = m.parents_graph(basis[t], latest[t])
        hist[t] = TreeHistory(rg.parents, rg.dates, basis[t], latest[t])
    try:
        return build_tuple_graph(hist)
    except GraphError as e:
        raise BisectError(str(e)) from None


def node_of(graph: RevGraph, revs: dict[str, str]) -> Node | None:
    if not all(t in revs for t in graph.trees):
        return None
    n = tuple(revs[t] for t in graph.trees)
    return n if n in graph else None


# ---------------------------------------------------------------- evidence


def collect(
    db: Database, row: dbb.BisectionRow, graph: RevGraph
) -> tuple[list[Observation], list[TraceRow]]:
    """Every finished flight of the branch that ran the job at a node of the graph, in flight
    order. Only pass/fail of the step is evidence; a probe that broke or was blocked counts
    as `broken` (budget, and the node turns untestable), other statuses are not evidence.
    A probe blocked because one of its builds *failed* is marked build_failed: that node is
    untestable at once, so a revision that does not compile is built only once."""
    with db.read() as conn:
        runs = dbb.step_runs(conn, row.branch, row.job, row.testid)
        unbuilt: set[int] = set()
        for r in runs:
            if r.step_status is None and r.finished:
                deps = dbf.job_deps_of(conn, r.flight).get(row.job, [])
                st = dbf.job_statuses(conn, [(f, j) for _, f, j in deps if f == r.flight])
                if any(v == "fail" for v in st.values()):
                    unbuilt.add(r.flight)  # a build it needs failed (not broke)
    obs: list[Observation] = []
    trace: list[TraceRow] = []
    for r in runs:
        if not r.finished:
            continue
        node = node_of(graph, r.revisions)
        if node is None:
            continue
        probe = r.bless_as == "real-bisect" and r.flight > row.start_flight
        kind = "trigger" if r.flight == row.latest_flight else "probe" if probe else "history"
        if r.step_status in ("pass", "fail") and r.job_status != "broken":
            result = r.step_status
        elif probe:
            result = "broken"
        else:
            continue
        host = r.host or row.host
        failed_build = result == "broken" and r.flight in unbuilt
        obs.append(Observation(node, result, host, kind, failed_build))  # type: ignore[arg-type]
        trace.append(TraceRow(r.flight, result, node, host, kind))
    return obs, trace


def flake_estimate(db: Database, loaded: Loaded, row: dbb.BisectionRow) -> FlakeGrid:
    """f from known-good runs (§4.2): flights up to the triggering failure whose tuple is,
    tree by tree, an ancestor-or-self of the basis tuple. Every fail there was false."""
    with db.read() as conn:
        runs = dbb.step_runs(conn, row.branch, row.job, row.testid)
    cutoff = row.latest_flight if row.latest_flight is not None else row.start_flight
    memo: dict[tuple[str, str], bool] = {}

    def good(t: str, rev: str) -> bool:
        key = (t, rev)
        if key not in memo:
            try:
                memo[key] = _mirror(loaded, t).is_ancestor(rev, row.basis[t])
            except (GitError, BisectError):
                memo[key] = False
        return memo[key]

    passes = fails = 0
    for r in runs:
        if not r.finished or r.flight > cutoff or r.step_status not in ("pass", "fail"):
            continue
        if r.job_status == "broken" or r.flight == row.latest_flight:
            continue
        if all(t in r.revisions and good(t, r.revisions[t]) for t in row.basis):
            if r.step_status == "fail":
                fails += 1
            else:
                passes += 1
    return flake_grid(passes, fails)


# ---------------------------------------------------------------- probe flights


def needed_jobs(loaded: Loaded, job: str) -> list[str]:
    """The job and, transitively, the builds it names; builds first."""
    order: list[str] = []

    def visit(j: str) -> None:
        if j in order:
            return
        for dep in loaded.jobs[j].all_buildjobs().values():
            visit(dep)
        order.append(j)

    visit(job)
    return order


def range_lock(row: dbb.BisectionRow) -> str:
    """The lock a bisection is searched under. Bisections of one branch over the same
    revision range share it (and their probe flights): they are searched one after the
    other, the later ones from the earlier ones' results."""
    rng = json.dumps([row.basis, row.latest], sort_keys=True).encode()
    return f"bisect-{row.branch}-{hashlib.sha256(rng).hexdigest()[:16]}"


def companions(db: Database, row: dbb.BisectionRow) -> list[dbb.BisectionRow]:
    """The other bisections of the branch over the same revision range (any status)."""
    with db.read() as conn:
        rows = dbb.over_range(conn, row.branch, row.basis, row.latest)
    return [r for r in rows if r.id != row.id]


def make_probe_flight(
    db: Database,
    loaded: Loaded,
    row: dbb.BisectionRow,
    revs: dict[str, str],
    say: Say = _say_nothing,
) -> int:
    """A `real-bisect` flight of the job at `revs`, reusing passing builds with identical
    input runvars from any earlier flight, the job pinned to the bisection's host.

    The flight also runs the jobs of the other running bisections over the same range
    (each pinned to its own host): a regression of one flight is searched once, and the
    later bisections find their evidence in these flights."""
    branch = row.branch
    trees = loaded.branch_trees(branch)
    full = {t: revs.get(t) or row.latest.get(t) or row.basis.get(t) or "" for t in trees}
    missing = [t for t, r in full.items() if not r]
    if missing:
        raise BisectError(f"no revision for tree {missing[0]}")
    tup = Tuple(full, {})
    rows = [row] + [c for c in companions(db, row) if c.status == "running"]
    pins: dict[str, str] = {}  # bisected job -> its host (this bisection's first)
    for r in rows:
        if r.job in loaded.jobs:
            pins.setdefault(r.job, r.host)
    names = list(dict.fromkeys(n for j in pins for n in needed_jobs(loaded, j)))
    reuse: dict[str, tuple[int, str]] = {}
    with db.read() as conn:
        for j in names:
            # Only leaf builds are reused: the bisected jobs always run (osstest §7.10).
            if j in pins or loaded.jobs[j].all_buildjobs():
                continue
            f = dbb.reusable_build(conn, j, job_runvars(loaded, branch, j, tup))
            if f is not None and _artifacts_kept(loaded, f, j):
                reuse[j] = (f, j)
                say(f"  Can reuse {j} {f}.{j}.")
    new_jobs = plan_jobs(loaded, branch, names, tup, reuse=reuse)
    pinned = []
    for nj in new_jobs:
        if nj.job in pins:
            nj = dbf.NewJob(nj.job, {**nj.runvars, "bisect_host": pins[nj.job]}, nj.deps)
        pinned.append(nj)
    revisions: dict[str, tuple[str, str, str | None]] = {
        t: (full[t], loaded.trees[t].url, None) for t in trees
    }
    with db.write() as conn:
        return dbf.create_flight(
            conn,
            branch=branch,
            intended="real",
            bless_as="real-bisect",
            revisions=revisions,
            new_jobs=pinned,
            parent_flight=row.latest_flight,
        )


def _artifacts_kept(loaded: Loaded, flight: int, job: str) -> bool:

    cfg = loaded.jobs[job]
    return not cfg.artifacts or job_artifacts(loaded, flight, job).is_dir()


# ---------------------------------------------------------------- the loop


def open_bisection(
    db: Database,
    loaded: Loaded,
    branch: str,
    job: str,
    testid: str,
    good: dict[str, str] | None,
    bad: dict[str, str] | None,
) -> tuple[dbb.BisectionRow, bool]:
    """The running bisection of (branch, job, testid), created if there is none."""
    loaded.branch(branch)
    if job not in loaded.jobs:
        raise BisectError(f"unknown job {job!r}")
    with db.read() as conn:
        row = dbb.get_running(conn, branch, job, testid)
    if row is not None:
        return row, False
    try:
        ep = find_endpoints(db, loaded, branch, job, testid)
    except BisectError:
        if not (good and bad):
            raise
        ep = Endpoints({}, {}, None, None, _default_host(loaded))
    basis = resolve_revs(loaded, good or {}, ep.basis)
    latest = resolve_revs(loaded, bad or {}, ep.latest)
    for t in loaded.branch_trees(branch):
        basis.setdefault(t, latest.get(t, ""))
        latest.setdefault(t, basis.get(t, ""))
    # Flights found for other endpoints are not this bisection's basis/trigger.
    bflight = ep.basis_flight if basis == ep.basis else None
    lflight = ep.latest_flight if latest == ep.latest else None
    for attempt in (1, 2):
        try:
            with db.write() as conn:
                return dbb.create_bisection(
                    conn,
                    branch=branch,
                    job=job,
                    testid=testid,
                    basis=basis,
                    latest=latest,
                    basis_flight=bflight,
                    latest_flight=lflight,
                    host=ep.host,
                    start_flight=dbb.max_flight_number(conn),
                )
        except IntegrityError:  # a racing creator on PostgreSQL (unique `active`)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def bisect(
    db: Database,
    loaded: Loaded,
    branch: str,
    job: str,
    testid: str,
    good: dict[str, str] | None = None,
    bad: dict[str, str] | None = None,
    *,
    hosts: int = 1,
    params: SearchParams | None = None,
    say: Say | None = None,
    max_rounds: int = 500,
    mail: bool = True,
    stop: Callable[[], bool] | None = None,
) -> BisectResult:
    """Bisect (branch, job, testid) to its end, running `real-bisect` flights.

    Raises BisectStopped when `stop()` says so or a probe flight was stopped by a signal
    (run_flight returned with it unfinished); the next call resumes."""
    say = say or _say_nothing
    row, created = open_bisection(db, loaded, branch, job, testid, good, bad)
    say(
        f"bisection {row.id} {'started' if created else 'resumed'}: {branch} {job} {testid}"
        f" on {row.host}"
    )
    graph = tuple_graph(loaded, row.basis, row.latest)
    say(f"Loaded {len(graph)} nodes in revision graph")
    basis = node_of(graph, row.basis)
    latest = node_of(graph, row.latest)
    base_params = params or SearchParams(fgrid=flake_estimate(db, loaded, row))
    sp = dataclasses.replace(base_params, strict_host=row.host)
    say(
        f"flake rate: f_conf={sp.fgrid.conf:.3f} from {sp.fgrid.history} known-good runs"
        + (" (deterministic)" if sp.fgrid.proven else "")
    )
    rounds = 0
    warned = ""
    while True:
        with db.read() as conn:
            pending = dbb.unfinished_probe_flights(conn, branch, job, row.start_flight)
        for f in pending:
            say(f"flight {f}: resuming")
            run_flight(db, loaded, f)
        _check_stop(db, row, pending, stop)
        obs, trace = collect(db, row, graph)
        if basis is None or latest is None:
            decision: Outcome | Probes = Outcome(
                "doubtful", None, 0.0, 0, reason="basis or latest not in the graph"
            )
        else:
            decision = step(graph, basis, latest, obs, sp, hosts)
            if not warned and swapped(obs, basis, latest):
                warned = "good revision fails and bad revision passes: swapped?"
                say(f"WARNING: {warned}")
        if isinstance(decision, Outcome):
            if warned:
                decision = dataclasses.replace(decision, reason=f"{warned} {decision.reason}")
            return _finish(
                db,
                loaded,
                row,
                graph,
                decision,
                obs,
                trace,
                rounds,
                say,
                mail,
                _mass(graph, row, obs, sp),
            )
        rounds += 1
        if rounds > max_rounds:
            raise BisectError(f"bisection {row.id}: more than {max_rounds} rounds")
        made = []
        for node in decision.nodes:
            f = make_probe_flight(db, loaded, row, graph.as_dict(node), say)
            made.append(f)
            say(
                f"flight {f}: testing {' '.join(c[:12] for c in node)} ({decision.phase},"
                f" P(top)={decision.p_top:.3f} P(flake)={decision.p_flake:.3f})"
            )
        for f, statuses in zip(made, _run_all(db, loaded, made), strict=True):
            say(f"flight {f}: {job} {statuses.get(job, '?')}")
        with db.write() as conn:
            dbb.set_runs(conn, row.id, sum(o.kind == "probe" for o in obs) + len(made))
        _check_stop(db, row, made, stop)


def _shared_with(db: Database, row: dbb.BisectionRow, probes: list[int]) -> list[int]:
    """The other bisections over this range whose job ran in one of these probe flights."""
    out = []
    for c in companions(db, row):
        with db.read() as conn:
            ran = {r.flight for r in dbb.step_runs(conn, c.branch, c.job, c.testid)}
        if ran.intersection(probes):
            out.append(c.id)
    return out


def _check_stop(
    db: Database, row: dbb.BisectionRow, flights: list[int], stop: Callable[[], bool] | None
) -> None:
    with db.read() as conn:
        stopped = [f for f in flights if (fi := dbf.get_flight(conn, f)) and not fi.finished]
    if stopped or (stop is not None and stop()):
        raise BisectStopped(
            f"bisection {row.id}: stopped"
            + (f" in flight {', '.join(map(str, stopped))}" if stopped else "")
        )


def _run_all(db: Database, loaded: Loaded, flights: list[int]) -> list[dict[str, str]]:
    """Run a round's probe flights; with several probes, at once (one thread each: every
    run_flight has its own event loop, and the DB's write transactions serialise them)."""
    if len(flights) == 1:
        return [run_flight(db, loaded, flights[0])[0]]
    with ThreadPoolExecutor(max_workers=len(flights)) as pool:
        return [st for st, _ in pool.map(lambda f: run_flight(db, loaded, f), flights)]


def _mass(
    graph: RevGraph, row: dbb.BisectionRow, obs: Sequence[Observation], sp: SearchParams
) -> dict[Node, float] | None:
    """Posterior mass per candidate, to shade the SVG's untested nodes."""
    basis, latest = node_of(graph, row.basis), node_of(graph, row.latest)
    if basis is None or latest is None:
        return None
    try:
        idx = build_index(graph, basis, latest)
        post = compute_posterior(
            idx,
            [o for o in obs if o.host == row.host],
            sp.fgrid,
            sp.eps_grid,
            sp.eps_prior(),
            sp.pi_flake,
            sp.pi_env,
            sp.prior_weights,
        )
    except (GraphError, ValueError):
        return None
    return {n: post.node_mass(n) for n in idx.cands}


def _blame(
    graph: RevGraph, culprit: Node, basis: Node | None
) -> tuple[str | None, str | None, list[str]]:
    """(tree, commit, [commit in each parent]) of the one tree the culprit's edges change."""
    tree = commit = None
    not_present: list[str] = []
    for p in graph.parents(culprit):
        for i, (a, b) in enumerate(zip(p, culprit, strict=True)):
            if a != b:
                tree, commit = graph.trees[i], b
                not_present.append(a)
    return tree, commit, not_present


def _finish(
    db: Database,
    loaded: Loaded,
    row: dbb.BisectionRow,
    graph: RevGraph,
    out: Outcome,
    obs: Sequence[Observation],
    trace: list[TraceRow],
    rounds: int,
    say: Say,
    mail: bool,
    mass: dict[Node, float] | None = None,
) -> BisectResult:

    tree = commit = None
    not_present: list[str] = []
    culprit = None
    if out.culprit is not None:
        culprit = graph.as_dict(out.culprit)
        tree, commit, not_present = _blame(graph, out.culprit, node_of(graph, row.basis))
    probes = sorted({t.flight for t in trace if t.kind == "probe"})
    res = BisectResult(
        id=row.id,
        branch=row.branch,
        job=row.job,
        testid=row.testid,
        outcome=out.kind,
        exit_code=EXIT_CODES[out.kind],
        culprit=culprit,
        culprit_tree=tree,
        culprit_commit=commit,
        not_present=not_present,
        confidence=out.confidence,
        runs=out.runs,
        probe_flights=probes,
        rounds=rounds,
        reason=out.reason,
        trace=trace,
        shared_with=_shared_with(db, row, probes),
    )
    if row.status == "running":
        with db.write() as conn:
            dbb.finish_bisection(
                conn,
                row.id,
                status=out.kind,
                culprit_tree=tree,
                culprit_commit=commit,
                confidence=out.confidence,
                runs=out.runs,
                reason=out.reason,
            )
    res.svg_path = rep.write_graph(loaded, row, graph, trace, out, mass)
    res.subject, res.body = rep.render(loaded, row, graph, out, res, obs)
    if mail:
        rep.enqueue_mail(db, loaded, row, res)
    say(f"{out.kind}: {res.subject}")
    return res


def start_for_regressions(
    db: Database,
    loaded: Loaded,
    flight: int,
    regressions: Iterable[tuple[str, str]] | None = None,
    run: bool = True,
    say: Say | None = None,
) -> list[BisectResult]:
    """Bisect each regression of `flight` (one bisection per (branch, job, testid), deduped).

    `regressions` are (job, testid) pairs; by default the flight's failed steps the
    classifier calls regressions. With run=False the bisections are only opened."""
    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
    if info is None:
        raise BisectError(f"flight {flight} does not exist")
    pairs = list(regressions) if regressions is not None else _regressions(db, loaded, flight)
    out: list[BisectResult] = []
    for job, testid in pairs:
        if _bisected_past(db, info.branch, job, testid, flight):
            continue  # this failure was bisected already
        try:
            if not run:
                open_bisection(db, loaded, info.branch, job, testid, None, None)
                continue
            out.append(bisect(db, loaded, info.branch, job, testid, say=say))
        except (BisectError, FlightError, GitError) as e:
            (say or _say_nothing)(f"{job} {testid}: cannot bisect: {e}")
    return out


def _bisected_past(db: Database, branch: str, job: str, testid: str, flight: int) -> bool:
    """A finished bisection of (branch, job, testid) already searched up to `flight`."""
    with db.read() as conn:
        last = dbb.latest_for(conn, branch, job, testid)
    return (
        last is not None
        and last.status != "running"
        and last.latest_flight is not None
        and last.latest_flight >= flight
    )


def _regressions(db: Database, loaded: Loaded, flight: int) -> list[tuple[str, str]]:
    """The regressions of the flight's stored verdict (judged now if it never was)."""
    vd = verdicts.for_report(db, loaded, flight)
    seen: list[tuple[str, str]] = []
    for f in vd.classification.all_failures:
        if f.in_flight is not None or f.stepno is None:
            continue  # heisen flights and whole-job entries are not bisectable steps
        if f.blocker == "regression" and (f.job, f.testid) not in seen:
            seen.append((f.job, f.testid))
    return seen


def open_bisections(
    db: Database, loaded: Loaded, flight: int, regressions: Iterable[tuple[str, str]]
) -> tuple[list[int], list[str]]:
    """Open (not run) a bisection of each regression of `flight`, unless one already
    searched past it; returns (the bisection ids, notes on those that cannot be)."""
    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
    if info is None:
        raise BisectError(f"flight {flight} does not exist")
    ids: list[int] = []
    notes: list[str] = []
    for job, testid in regressions:
        if _bisected_past(db, info.branch, job, testid, flight):
            continue  # this failure was bisected already
        try:
            row, _ = open_bisection(db, loaded, info.branch, job, testid, None, None)
        except (BisectError, FlightError, GitError) as e:
            notes.append(f"{job} {testid}: cannot bisect: {e}")
            continue
        if row.id not in ids:
            ids.append(row.id)
    return ids, notes


def elapsed(t0: float) -> float:
    return time.monotonic() - t0
