"""The gate's stages of a branch cycle (osstest §2.1): fetch -> decide whether a flight
is due (the input moved, the baseline was never tested, a force waits, the last flight of
the input tip did not push, or the cron schedule fired) -> make the flight -> run it ->
maybe run an immediate retest of the regressed jobs (§6.5) -> judge: the verdict is stored
-> push decision and push (gate.push) -> stage `report`.

The stages after the gate's (report, mail, bisection requests) belong to the layers above
(daemon.cycle), which call this module. Each stage's effect is recorded in the database
before the next starts (`gate_cycles.stage`, the flight rows, the stored verdict, the
unique `pushes` row), and every stage is idempotent, so a cycle killed at any point
(kill -9 included) is completed by the next run: the flight resumes, the verdict is
stored once, the push happens at most once.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from pushgate.config import Loaded
from pushgate.db import cycles as dbc
from pushgate.db import flights as dbf
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.errors import EXIT_INTERRUPTED
from pushgate.gate.locks import HeldLock, pause_point
from pushgate.gate.push import push_flight, push_url
from pushgate.judge import verdicts
from pushgate.judge.verdict import BLOCKER_REGRESSION, Classification
from pushgate.judge.verdicts import classify_flight
from pushgate.run.plan import (
    Tuple,
    fetch_trees,
    plan_jobs,
    resolve_tuple,
    select_branch_jobs,
)

log = logging.getLogger(__name__)

RunFn = Callable[[Database, Loaded, int], object]
# Exit status of `pushgate branch run` when it was asked to stop midway (resumable): 130,
# interrupted, as for every command that runs flights (README "Exit codes").
EXIT_STOPPED = EXIT_INTERRUPTED


@dataclass(frozen=True)
class Plan:
    """Why and how a new flight is due."""

    mode: str  # normal | baseline-test | up-to-date
    target: str
    that: str | None
    expected_old: str | None
    reason: str
    tup: Tuple


class Stopper:
    """SIGTERM/SIGINT ask the cycle to stop after the current stage."""

    def __init__(self) -> None:
        self.stop = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True


def _schedule_due(schedule: str | None, last_created: float | None, now: float) -> bool:
    if not schedule:
        return False
    if last_created is None:
        return True
    from croniter import croniter

    nxt = croniter(schedule, datetime.fromtimestamp(last_created, UTC)).get_next(float)
    return float(nxt) <= now


def plan_cycle(
    db: Database, loaded: Loaded, branch: str, *, now: float | None = None
) -> Plan | None:
    """Fetch the branch's trees and say whether (and in which mode) a flight is due."""
    now = time.time() if now is None else now
    br = loaded.branch(branch)
    tree = br.tree
    tc = loaded.trees[tree]
    mirrors = fetch_trees(loaded, loaded.branch_trees(branch))
    tup = resolve_tuple(loaded, branch, mirrors, {})
    target = tup.revisions[tree]
    tested = tup.baselines.get(tree)
    if tc.push_url and tc.push_url != tc.url:
        tested = mirrors[tree].remote_ref(push_url(loaded, tree), tc.tested_ref)
    with db.read() as conn:
        last = dbc.latest_cycle(conn, branch)
        state = dbp.get_gate(conn, branch)
        base_tested = tested is None or dbc.revision_tested(conn, branch, tree, tested)
        latest_tested = dbc.latest_tested_revision(conn, branch, tree)
        last_push = dbp.get_push(conn, last.flight) if last else None

    def plan(mode: str, rev: str, that: str | None, reason: str) -> Plan:
        revs = dict(tup.revisions)
        revs[tree] = rev
        bases = dict(tup.baselines)
        bases[tree] = tested
        return Plan(mode, rev, that, tested, reason, Tuple(revs, bases))

    if (
        tested is not None
        and not base_tested
        and not (last is not None and last.mode == "baseline-test" and last.target == tested)
    ):
        return plan("baseline-test", tested, latest_tested, f"baseline {tested} never tested")
    if target != tested and (last is None or last.target != target or last.mode != "normal"):
        return plan("normal", target, tested, f"input moved to {target}")
    # A force retests the input only if the last verdict is what stopped its push (a push
    # refused because the tested ref moved is not retried over and over).
    held_back = last_push is not None and last_push.status == "not-pushed"
    forced = state.force or state.force_revision == target
    if forced and target != tested and held_back and state.blocked_why is None:
        return plan("normal", target, tested, "push forced")
    # osstest tests the input tip again when its last flight did not push and nothing
    # moved (`Testing same since N ... k attempts`): a heisenbug that also failed its
    # retest is pushed a flight later; a real regression is tested until it is fixed.
    if (
        last is not None
        and target != tested
        and last.target == target
        and last.mode == "normal"
        and held_back
        and state.blocked_why is None
        and now >= last.updated + br.repeat_pause_s
    ):
        return plan("normal", target, tested, f"flight {last.flight} did not push: testing again")
    if _schedule_due(br.schedule, last.created if last else None, now):
        mode = "normal" if target != tested else "up-to-date"
        return plan(mode, target, tested, f"schedule {br.schedule!r}")
    return None


def make_flight(db: Database, loaded: Loaded, branch: str, p: Plan) -> int:
    """Create the flight and its cycle row in one transaction."""
    br = loaded.branch(branch)
    trees = loaded.branch_trees(branch)
    planned = plan_jobs(loaded, branch, select_branch_jobs(loaded, branch, None), p.tup)
    revisions = {
        t: (p.tup.revisions[t], loaded.trees[t].url, p.tup.baselines.get(t)) for t in trees
    }
    with db.write() as conn:
        flight = dbf.create_flight(
            conn,
            branch=branch,
            intended="real",
            bless_as=br.blessing,
            revisions=revisions,
            new_jobs=planned,
        )
        dbc.insert_cycle(
            conn,
            flight=flight,
            branch=branch,
            tree=br.tree,
            mode=p.mode,
            target=p.target,
            that_revision=p.that,
            expected_old=p.expected_old,
            reason=p.reason,
        )
    return flight


def build_jobs(loaded: Loaded, branch: str) -> set[str]:
    """Jobs that are builds: named build-* or needed as some job's buildjob."""
    names = loaded.branch_jobs(branch)
    deps = {d for j in names for d in loaded.jobs[j].all_buildjobs().values()}
    return deps | {j for j in names if j.startswith("build-")}


def retest_plan(loaded: Loaded, cyc: dbc.CycleRow, c: Classification) -> tuple[list[str], str]:
    """§6.5: the regressed non-build jobs to retest, and a note saying why (not)."""
    br = loaded.branch(cyc.branch)
    if c.tolerable:
        return [], "no retest: tolerable"
    if br.retest_max_fraction <= 0:
        return [], "no retest: retest_max_fraction = 0"
    if not br.push or cyc.mode != "normal" or not br.blessing.startswith("real"):
        return [], "no retest: no push wanted"
    builds = build_jobs(loaded, cyc.branch)
    main = [f for f in c.all_failures if f.in_flight is None or f.in_flight == c.flight]
    blockers = [f for f in c.all_failures if f.blocker is not None]
    regressed = [f for f in main if f.blocker == BLOCKER_REGRESSION and f.job not in builds]
    jobs = [j for j in loaded.branch_jobs(cyc.branch) if j in {f.job for f in regressed}]
    if not jobs or len(regressed) < len(blockers):
        return [], "no retest: other blockers"
    njobs = len(c.jobs)
    if len(jobs) > 1 and len(jobs) > br.retest_max_fraction * njobs:
        return [], f"no retest: too many regressions ({len(jobs)} of {njobs} jobs)"
    return jobs, f"retest of {', '.join(jobs)}"


def make_retest(db: Database, loaded: Loaded, cyc: dbc.CycleRow, jobs: list[str], note: str) -> int:
    """A real-retest flight of `jobs` on the same tuple, its builds those of the main
    flight; created together with the cycle's move to the retest stage."""
    with db.read() as conn:
        info = dbf.get_flight(conn, cyc.flight)
        bases = dbf.flight_baselines(conn, cyc.flight)
    assert info is not None
    tup = Tuple(dict(info.revisions), bases)
    reuse: dict[str, tuple[int, str]] = {}
    for j in jobs:
        for dep in loaded.jobs[j].all_buildjobs().values():
            reuse[dep] = (cyc.flight, dep)
    planned = plan_jobs(loaded, cyc.branch, jobs, tup, reuse=reuse)
    urls = {t: loaded.trees[t].url if t in loaded.trees else "" for t in info.revisions}
    with db.write() as conn:
        urls.update(dbf.flight_urls(conn, cyc.flight))
        retest = dbf.create_flight(
            conn,
            branch=cyc.branch,
            intended="real",
            bless_as="real-retest",
            revisions={t: (r, urls[t], bases.get(t)) for t, r in info.revisions.items()},
            new_jobs=planned,
            parent_flight=cyc.flight,
        )
        dbc.set_stage(conn, cyc.flight, "retest", retest_flight=retest, retest_note=note)
    return retest


def cycle_row(db: Database, flight: int) -> dbc.CycleRow:
    """The cycle of a flight the gate made (it must exist)."""
    with db.read() as conn:
        cyc = dbc.get_cycle(conn, flight)
    assert cyc is not None
    return cyc


def _finished(db: Database, flight: int) -> bool:
    with db.read() as conn:
        return dbc.flight_finished(conn, flight)


def open_cycle(
    db: Database, loaded: Loaded, branch: str, *, new_flight: bool = True
) -> dbc.CycleRow | None:
    """The branch's unfinished cycle, or a new one when a flight is due (call under the
    branch lock)."""
    with db.read() as conn:
        cyc = dbc.latest_cycle(conn, branch, open_only=True)
    if cyc is None and new_flight:
        p = plan_cycle(db, loaded, branch)
        if p is not None:
            flight = make_flight(db, loaded, branch, p)
            log.info("%s: flight %s (%s)", branch, flight, p.reason)
            cyc = cycle_row(db, flight)
    return cyc


def _judge(db: Database, loaded: Loaded, flight: int, note: str | None = None) -> None:
    """Store the flight's verdict in the transaction that moves the cycle to `push`."""
    fields = {} if note is None else {"retest_note": note}
    verdicts.record(
        db, loaded, flight, also=lambda conn: dbc.set_stage(conn, flight, "push", **fields)
    )


def advance_gate(
    db: Database,
    loaded: Loaded,
    cyc: dbc.CycleRow,
    run: RunFn,
    stopper: Stopper,
    notes: list[str],
    lock: HeldLock | None = None,
) -> tuple[str, dbc.CycleRow]:
    """Take the cycle through the gate's stages (flight, retest, push) up to `report`.
    Returns ("stopped" or "ok", the cycle row as it is now).

    `lock`, the branch lock the caller holds, is checked after a flight runs and before
    the push: LockLost (its database connection dropped) stops the cycle there, and the
    next cycle resumes it."""
    check = lock.check if lock is not None else lambda: None
    flight = cyc.flight
    if cyc.stage == "flight":
        if not _finished(db, flight):
            run(db, loaded, flight)
            stopper.install()  # the flight runner's own handlers are gone now
            if not _finished(db, flight):
                return "stopped", cyc
            check()
        c = classify_flight(db, loaded, flight)
        jobs, note = retest_plan(loaded, cyc, c)
        notes.append(note)
        if jobs:
            make_retest(db, loaded, cyc, jobs, note)
        else:
            _judge(db, loaded, flight, note)
        cyc = cycle_row(db, flight)
    if stopper.stop:
        return "stopped", cyc
    if cyc.stage == "retest":
        assert cyc.retest_flight is not None
        if not _finished(db, cyc.retest_flight):
            run(db, loaded, cyc.retest_flight)
            stopper.install()
            if not _finished(db, cyc.retest_flight):
                return "stopped", cyc
            check()
        _judge(db, loaded, flight)
        cyc = cycle_row(db, flight)
    if stopper.stop:
        return "stopped", cyc
    if cyc.stage == "push":
        vd = verdicts.stored(db, flight)
        if vd is None:  # a cycle left at `push` by a version that stored no verdict
            vd = verdicts.record(db, loaded, flight)
        pause_point("report")
        with db.read() as conn:
            blessing = dbf.bless_as(conn, flight)
        check()
        push_flight(db, loaded, flight, tolerable=vd.classification.tolerable, blessing=blessing)
        with db.write() as conn:
            dbc.set_stage(conn, flight, "report")
        cyc = cycle_row(db, flight)
    return "ok", cyc
