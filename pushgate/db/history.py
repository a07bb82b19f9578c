"""History queries for the classifier (spec/osstest-semantics.md §4).

Every lookup is batched: one query answers a question for all the failures of
a flight, and every query is keyed by an index, so the cost of a report does
not grow with the length of the history:

- flight_built(tree, revision, flight): the flights that tested a revision;
- steps(flight, job, stepno) (primary key): a step's status in flight C;
- steps(job, testid, status, flight): "did (job, testid) ever pass".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
)

from pushgate.db.schema import flight_built, flight_revisions, flights, job_deps, jobs, steps

# Cap on comparison candidates (osstest's findaflight window).
MAX_CANDIDATES = 1000
# Duration estimates look this far back (§8.7) and default to this (§4.3).
ESTIMATE_WINDOW_S = 14 * 86400
UNKNOWN_ESTIMATE_S = 100000.0
ESTIMATE_FLIGHTS = 20

_BUILT_PREFIX = "built_revision_"
_HG_PREFIX = re.compile(r"^[0-9]+:")
# Rows per IN (...) list: well under SQLite's bound-parameter limit.
_CHUNK = 500
_T = TypeVar("_T")


def is_prev_build(job: str) -> bool:
    """`build-<arch>-prev` jobs build the previous release: never "the revision tested"."""
    return job.startswith("build-") and job.endswith("-prev")


def normalise_revision(value: str) -> str:
    """Strip hg's `NNN:` local-number prefix so built revisions compare as full hashes."""
    return _HG_PREFIX.sub("", value, count=1)


def _chunks(items: Sequence[_T], n: int = _CHUNK) -> Iterable[list[_T]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


# --- the built tuple -------------------------------------------------------------------------


_CLOSURE_SQL = text(
    """
    WITH RECURSIVE rel(flight, job) AS (
        SELECT flight, job FROM jobs WHERE flight = :flight
        UNION
        SELECT d.dep_flight, d.dep_job
        FROM job_deps d JOIN rel r ON d.flight = r.flight AND d.job = r.job
    )
    SELECT rel.flight, rel.job, rv.name, rv.value
    FROM rel JOIN runvars rv ON rv.flight = rel.flight AND rv.job = rel.job
    WHERE substr(rv.name, 1, 15) = 'built_revision_'
    """
)


def built_tuple(conn: Connection, flight: int) -> dict[str, str | None]:
    """tree -> built revision over the flight's transitive buildjob closure (None: mismatch).

    Follows job_deps into other flights; ignores `build-*-prev` jobs (§1.4).
    """
    seen: dict[str, set[str]] = {}
    for _f, job, name, value in conn.execute(_CLOSURE_SQL, {"flight": flight}):
        if is_prev_build(job) or not name.startswith(_BUILT_PREFIX):
            continue
        tree = name[len(_BUILT_PREFIX) :]
        seen.setdefault(tree, set()).add(normalise_revision(value))
    return {t: (next(iter(v)) if len(v) == 1 else None) for t, v in seen.items()}


def compute_flight_built(conn: Connection, flight: int) -> dict[str, str | None]:
    """Compute and store the flight's built tuple; call when the flight finishes."""
    built = built_tuple(conn, flight)
    conn.execute(delete(flight_built).where(flight_built.c.flight == flight))
    if built:
        conn.execute(
            insert(flight_built),
            [{"flight": flight, "tree": t, "revision": r} for t, r in sorted(built.items())],
        )
    return built


# --- flights and their contents ---------------------------------------------------------------


@dataclass(frozen=True)
class FlightRow:
    flight: int
    branch: str
    blessing: str
    intended: str
    created: float
    started: float | None
    finished: float | None


def flight_row(conn: Connection, flight: int) -> FlightRow | None:
    r = conn.execute(
        select(
            flights.c.flight,
            flights.c.branch,
            flights.c.blessing,
            flights.c.intended,
            flights.c.created,
            flights.c.started,
            flights.c.finished,
        ).where(flights.c.flight == flight)
    ).first()
    return FlightRow(*r) if r else None


def flight_revisions_of(conn: Connection, flight: int) -> dict[str, str]:
    """The targeted tuple of a flight: tree -> revision."""
    rows = conn.execute(
        select(flight_revisions.c.tree, flight_revisions.c.revision).where(
            flight_revisions.c.flight == flight
        )
    )
    return {t: r for t, r in rows}


def flight_tuples(conn: Connection, flight: int) -> list[tuple[str, str, str | None]]:
    """(tree, targeted revision, baseline revision or None) for each tree of the flight."""
    rows = conn.execute(
        select(flight_revisions.c.tree, flight_revisions.c.revision, flight_revisions.c.baseline)
        .where(flight_revisions.c.flight == flight)
        .order_by(flight_revisions.c.tree)
    )
    return [(t, r, b) for t, r, b in rows]


def job_statuses(conn: Connection, flight: int) -> dict[str, str]:
    """job -> status for every job of the flight."""
    rows = conn.execute(select(jobs.c.job, jobs.c.status).where(jobs.c.flight == flight))
    return {j: s for j, s in rows}


@dataclass(frozen=True)
class StepRow:
    job: str
    stepno: int
    testid: str
    status: str


def failing_steps(conn: Connection, flight: int) -> list[StepRow]:
    """Every step of the flight whose status is neither pass nor skip, by (job, stepno)."""
    rows = conn.execute(
        select(steps.c.job, steps.c.stepno, steps.c.testid, steps.c.status)
        .where(steps.c.flight == flight, steps.c.status.not_in(["pass", "skip"]))
        .order_by(steps.c.job, steps.c.stepno)
    )
    return [StepRow(*r) for r in rows]


def duration_estimates(
    conn: Connection, flight: FlightRow, job_names: Sequence[str], blessings: Sequence[str]
) -> dict[str, float]:
    """job -> estimated duration, for the processing order (§4.3; §8.7 simplified).

    The longest run (finished - started) of the job, with status pass or fail, in the
    ESTIMATE_FLIGHTS newest flights of the same branch and blessings that started in the
    14 days before this flight. Bounded work whatever the history's length. Jobs with no
    such history are absent from the result.
    """
    if not job_names:
        return {}
    now = flight.started if flight.started is not None else flight.created
    recent = [
        f
        for (f,) in conn.execute(
            select(flights.c.flight)
            .where(
                flights.c.branch == flight.branch,
                flights.c.blessing.in_(list(blessings)),
                flights.c.started >= now - ESTIMATE_WINDOW_S,
                flights.c.started <= now,
                flights.c.flight != flight.flight,
            )
            .order_by(flights.c.flight.desc())
            .limit(ESTIMATE_FLIGHTS)
        )
    ]
    if not recent:
        return {}
    rows = conn.execute(
        select(jobs.c.job, func.max(jobs.c.finished - jobs.c.started))
        .where(
            jobs.c.flight.in_(recent),
            jobs.c.job.in_(list(job_names)),
            jobs.c.status.in_(["pass", "fail"]),
        )
        .group_by(jobs.c.job)
    )
    return {j: float(t) for j, t in rows if t is not None}


# --- history lookups --------------------------------------------------------------------------


def never_passed(
    conn: Connection,
    pairs: Sequence[tuple[str, str]],
    branches: Sequence[str],
    blessings: Sequence[str],
) -> set[tuple[str, str]]:
    """The (job, testid) pairs that never passed in a flight of these branches and blessings.

    One query: a UNION ALL of one indexed EXISTS probe per pair (steps(job, testid, status)).
    """
    pairs = list(dict.fromkeys(pairs))
    if not pairs:
        return set()
    passed: set[tuple[str, str]] = set()
    for chunk in _chunks(pairs, 200):
        parts = []
        for i, (job, testid) in enumerate(chunk):
            # Driven by the steps index; the flight filter is a correlated probe so the
            # planner cannot start from every flight of the branch (linear in history).
            probe = exists(
                select(literal(1)).where(
                    steps.c.job == bindparam(f"j{i}", job),
                    steps.c.testid == bindparam(f"t{i}", testid),
                    steps.c.status == "pass",
                    exists(
                        select(literal(1)).where(
                            flights.c.flight == steps.c.flight,
                            flights.c.branch.in_(list(branches)),
                            flights.c.blessing.in_(list(blessings)),
                        )
                    ),
                )
            )
            parts.append(select(literal(i).label("i")).where(probe))
        q = union_all(*parts) if len(parts) > 1 else parts[0]
        for (i,) in conn.execute(q):
            passed.add(chunk[i])
    return {p for p in pairs if p not in passed}


@dataclass(frozen=True)
class Candidate:
    flight: int
    blessing: str


def flights_with_built(
    conn: Connection,
    revisions: dict[str, str],
    branches: Sequence[str],
    blessings: Sequence[str],
    *,
    exclude: Iterable[int] = (),
    limit: int = MAX_CANDIDATES,
) -> list[Candidate]:
    """Flights whose built tuple matches every given tree (§4.5), in visiting order.

    The `limit` highest-numbered matching flights of the branches and blessings, then
    ordered by blessing (`real` < `real-bisect` < `real-retest`) and flight descending.
    Empty when no revisions are given.
    """
    if not revisions:
        return []
    trees = sorted(revisions)
    first = flight_built.alias("fb0")
    q = (
        select(flights.c.flight, flights.c.blessing)
        .select_from(first.join(flights, flights.c.flight == first.c.flight))
        .where(
            first.c.tree == trees[0],
            first.c.revision == revisions[trees[0]],
            flights.c.branch.in_(list(branches)),
            flights.c.blessing.in_(list(blessings)),
        )
    )
    for n, tree in enumerate(trees[1:], 1):
        other = flight_built.alias(f"fb{n}")
        q = q.where(
            exists(
                select(literal(1)).where(
                    other.c.flight == first.c.flight,
                    other.c.tree == tree,
                    other.c.revision == revisions[tree],
                )
            )
        )
    excluded = list(exclude)
    if excluded:
        q = q.where(first.c.flight.not_in(excluded))
    q = q.order_by(first.c.flight.desc()).limit(limit)
    found = [Candidate(f, b) for f, b in conn.execute(q)]
    found.sort(key=lambda c: (c.blessing, -c.flight))
    return found


def flight_candidates(conn: Connection, flight: int) -> list[Candidate]:
    """A single imposed comparison flight (`--that-flight`), if it exists."""
    r = conn.execute(select(flights.c.blessing).where(flights.c.flight == flight)).first()
    return [Candidate(flight, r[0])] if r else []


def jobs_present(
    conn: Connection, flight_ids: Sequence[int], job_names: Sequence[str]
) -> set[tuple[int, str]]:
    """(flight, job) pairs that exist, for the given flights and job names (one query/chunk)."""
    out: set[tuple[int, str]] = set()
    names = list(dict.fromkeys(job_names))
    if not flight_ids or not names:
        return out
    for chunk in _chunks(list(dict.fromkeys(flight_ids))):
        rows = conn.execute(
            select(jobs.c.flight, jobs.c.job).where(jobs.c.flight.in_(chunk), jobs.c.job.in_(names))
        )
        out.update((f, j) for f, j in rows)
    return out


def step_statuses(
    conn: Connection, flight_ids: Sequence[int], pairs: Sequence[tuple[str, str]]
) -> dict[tuple[int, str, str], str]:
    """(flight, job, testid) -> status of that step in those flights; absent = not executed.

    When a job has the same testid twice, the lowest step number wins.
    """
    out: dict[tuple[int, str, str], str] = {}
    wanted = set(pairs)
    names = list(dict.fromkeys(j for j, _ in pairs))
    if not flight_ids or not names:
        return out
    for chunk in _chunks(list(dict.fromkeys(flight_ids))):
        rows = conn.execute(
            select(steps.c.flight, steps.c.job, steps.c.testid, steps.c.status)
            .where(steps.c.flight.in_(chunk), steps.c.job.in_(names))
            .order_by(steps.c.flight, steps.c.job, steps.c.stepno.desc())
        )
        for f, j, t, s in rows:
            if (j, t) in wanted:
                out[(f, j, t)] = s  # descending stepno: the lowest is written last
    return out


def job_deps_of(conn: Connection, flight: int) -> list[tuple[str, str, int, str]]:
    """(job, name, dep_flight, dep_job) of the flight's buildjob references."""
    rows = conn.execute(
        select(job_deps.c.job, job_deps.c.name, job_deps.c.dep_flight, job_deps.c.dep_job).where(
            job_deps.c.flight == flight
        )
    )
    return [(j, n, df, dj) for j, n, df, dj in rows]
