"""Build a flight: fetch the trees, pick the tuple, create jobs and runvars.

The tree under test takes its input ref tip (or a --rev), every other tree
takes its tested ref tip (osstest §2.4); the tested ref tip of the tree under
test is recorded as the baseline.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from pushgate.config import ConfigError, Loaded
from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.errors import PushgateError
from pushgate.git import GitError, Mirror, check_ref
from pushgate.paths import mirror


class FlightError(PushgateError):
    """A flight cannot be made as asked."""


def fetch_trees(loaded: Loaded, trees: list[str]) -> dict[str, Mirror]:
    out = {}
    for t in trees:
        m = mirror(loaded, t)
        try:
            m.ensure()
            m.fetch()
        except GitError as e:
            raise FlightError(f"tree {t}: {e}") from None
        out[t] = m
    return out


def _try_resolve(m: Mirror, ref: str) -> str | None:
    try:
        return m.resolve(ref)
    except GitError:
        return None


@dataclass(frozen=True)
class Tuple:
    """The targeted revision of each tree, and each tree's tested-ref tip."""

    revisions: dict[str, str]
    baselines: dict[str, str | None]


def resolve_tuple(
    loaded: Loaded, branch: str, mirrors: dict[str, Mirror], overrides: dict[str, str]
) -> Tuple:
    br = loaded.branch(branch)
    revs: dict[str, str] = {}
    bases: dict[str, str | None] = {}
    for t in loaded.branch_trees(branch):
        tc = loaded.trees[t]
        m = mirrors[t]
        bases[t] = _try_resolve(m, tc.tested_ref)
        if t in overrides:
            try:
                revs[t] = m.resolve(check_ref(overrides[t]))
            except GitError as e:
                raise FlightError(f"--rev {t}={overrides[t]}: {e}") from None
        elif t == br.tree:
            try:
                revs[t] = m.resolve(tc.input_ref)
            except GitError as e:
                raise FlightError(f"tree {t}: input ref {tc.input_ref!r}: {e}") from None
        else:
            # Other trees stay at their tested revision; before the first push, at input.
            rev = bases[t] or _try_resolve(m, tc.input_ref)
            if rev is None:
                raise FlightError(
                    f"tree {t}: neither tested ref {tc.tested_ref!r} nor input ref "
                    f"{tc.input_ref!r} resolves"
                )
            revs[t] = rev
    unknown = set(overrides) - set(revs)
    if unknown:
        raise FlightError(f"--rev names tree {sorted(unknown)[0]!r}, not a tree of branch {branch}")
    return Tuple(revs, bases)


def select_branch_jobs(loaded: Loaded, branch: str, pattern: str | None) -> list[str]:
    """The branch's jobs, or those matching pattern plus the builds they need."""
    names = loaded.branch_jobs(branch)
    if pattern is None:
        return names
    chosen = {j for j in names if fnmatch.fnmatchcase(j, pattern)}
    if not chosen:
        raise FlightError(f"--jobs {pattern!r} matches no job of branch {branch}")
    todo = list(chosen)
    while todo:
        for dep in loaded.jobs[todo.pop()].all_buildjobs().values():
            if dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    return [j for j in names if j in chosen]


def job_runvars(loaded: Loaded, branch: str, job: str, tup: Tuple) -> dict[str, str]:
    jc = loaded.jobs[job]
    rv: dict[str, str] = {}
    for t in loaded.job_trees(branch, job):
        rv[f"tree_{t}"] = loaded.trees[t].url
        rv[f"revision_{t}"] = tup.revisions[t]
    if jc.hostflags:
        rv["all_hostflags"] = ",".join(jc.hostflags)
    rv.update(jc.runvars)
    return rv


def plan_jobs(
    loaded: Loaded,
    branch: str,
    names: list[str],
    tup: Tuple,
    reuse: dict[str, tuple[int, str]] | None = None,
) -> list[dbf.NewJob]:
    """Jobs for a new flight; `reuse` maps a build job to (flight, job) to use instead."""
    reuse = reuse or {}
    out = []
    for j in names:
        if j in reuse:
            continue
        deps: dict[str, tuple[int | None, str]] = {}
        for var, dep in loaded.jobs[j].all_buildjobs().items():
            deps[var] = reuse.get(dep, (None, dep))
        out.append(dbf.NewJob(j, job_runvars(loaded, branch, j, tup), deps))
    return out


@dataclass(frozen=True)
class FlightPlan:
    """Everything a new flight needs, worked out before anything is written."""

    branch: str
    blessing: str
    intended: str
    revisions: dict[str, tuple[str, str, str | None]]
    jobs: list[dbf.NewJob]
    parent_flight: int | None


def plan_flight(
    loaded: Loaded,
    branch: str,
    *,
    blessing: str = "real",
    revs: dict[str, str] | None = None,
    jobs: str | None = None,
    intended: str | None = None,
    parent_flight: int | None = None,
    fetch: bool = True,
) -> FlightPlan:
    """Fetch the trees and work out the tuple and jobs; raises FlightError, writes no DB row."""
    try:
        loaded.branch(branch)
    except ConfigError as e:
        raise FlightError(str(e)) from None
    trees = loaded.branch_trees(branch)
    mirrors = fetch_trees(loaded, trees) if fetch else {t: mirror(loaded, t) for t in trees}
    tup = resolve_tuple(loaded, branch, mirrors, revs or {})
    names = select_branch_jobs(loaded, branch, jobs)
    return FlightPlan(
        branch=branch,
        blessing=blessing,
        intended=intended or ("real" if blessing.startswith("real") else blessing),
        revisions={t: (tup.revisions[t], loaded.trees[t].url, tup.baselines.get(t)) for t in trees},
        jobs=plan_jobs(loaded, branch, names, tup),
        parent_flight=parent_flight,
    )


def create_planned(db: Database, plan: FlightPlan) -> int:
    with db.write() as conn:
        return dbf.create_flight(
            conn,
            branch=plan.branch,
            intended=plan.intended,
            bless_as=plan.blessing,
            revisions=plan.revisions,
            new_jobs=plan.jobs,
            parent_flight=plan.parent_flight,
        )


def new_flight(
    db: Database,
    loaded: Loaded,
    branch: str,
    *,
    blessing: str = "real",
    revs: dict[str, str] | None = None,
    jobs: str | None = None,
    intended: str | None = None,
    parent_flight: int | None = None,
    fetch: bool = True,
) -> int:
    """Create flight N for `branch`; returns N."""
    plan = plan_flight(
        loaded,
        branch,
        blessing=blessing,
        revs=revs,
        jobs=jobs,
        intended=intended,
        parent_flight=parent_flight,
        fetch=fetch,
    )
    return create_planned(db, plan)


def dump_flights(loaded: Loaded) -> list[str]:
    """Every branch's constructed jobs and input runvars, revisions as placeholders.

    osstest's standalone-generate-dump-flight-runvars: a diff of this output
    shows exactly what a config change does to the flights.
    """
    out = []
    for branch in loaded.branches:
        trees = loaded.branch_trees(branch)
        tup = Tuple({t: f"<{t}>" for t in trees}, {t: None for t in trees})
        for nj in plan_jobs(loaded, branch, loaded.branch_jobs(branch), tup):
            values = dict(nj.runvars)
            values.update({k: job for k, (_, job) in nj.deps.items()})
            out += [f"{branch} {nj.job} {k}={v}" for k, v in sorted(values.items())]
    return out
