"""One whole cycle of a branch (`pushgate branch run BRANCH`): the gate's stages
(gate.cycle: flight, retest, verdict, push), then the report is queued and mailed, then the
regressions to bisect are recorded, and the cycle ends.

Bisections run beside the gate, not in its cycle: the cycle only opens them (a
`running` row in `bisections` per regression), and the daemon's bisection loop, or
`pushgate bisect`, searches them under their own locks while the branch goes on testing.
So a regression's report is mailed before any bisection of it starts.

Every stage is recorded in `gate_cycles.stage` before the next starts and is idempotent:
a cycle killed at any point is completed by the next run, mailing each report once.
Cycles of one branch take turns under a branch lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pushgate.bisect.runner import open_bisections
from pushgate.config import Loaded
from pushgate.db import cycles as dbc
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.gate.cycle import RunFn, Stopper, advance_gate, cycle_row, open_cycle
from pushgate.gate.locks import HeldLock, LockLost, db_lock, pause_point
from pushgate.gate.push import push_line, retry_push
from pushgate.git import GitError
from pushgate.judge import verdicts
from pushgate.judge.verdict import BLOCKER_REGRESSION, Verdict
from pushgate.publish.mail.outbox import (
    deliver_due,
    enqueue_late_push,
    enqueue_report,
    mailer_for,
)
from pushgate.publish.mail.transport import Mailer
from pushgate.publish.report import BuiltReport, build_report
from pushgate.run.scheduler import run_flight

log = logging.getLogger(__name__)


@dataclass
class CycleResult:
    branch: str
    action: str
    """idle (nothing to do), done (a cycle completed), stopped (asked to stop midway),
    push (only an earlier flight's push was carried out: gate.push.retry_push)."""
    flight: int | None = None
    reason: str = ""
    push: dbp.PushRow | None = None
    report: BuiltReport | None = None
    notes: list[str] = field(default_factory=list)
    bisections: list[int] = field(default_factory=list)
    """Bisections opened by this cycle (searched by the bisection loop, not here)."""


def regressions_to_bisect(vd: Verdict) -> list[tuple[str, str]]:
    """The (job, testid) of the judged flight's own regressions, in verdict order."""
    return list(
        dict.fromkeys(
            (f.job, f.testid)
            for f in vd.classification.all_failures
            if f.blocker == BLOCKER_REGRESSION and f.in_flight is None and f.stepno is not None
        )
    )


def request_bisections(db: Database, loaded: Loaded, vd: Verdict) -> tuple[list[int], list[str]]:
    """§6.4: open a bisection for each regression of the flight (unless the branch says
    not to, or the report has broken lines); returns (their ids, notes)."""
    if not loaded.branch(vd.classification.branch).bisect:
        return [], []
    regs = regressions_to_bisect(vd)
    if not regs:
        return [], []
    if any(m.startswith("broken") for m in vd.classification.mro):
        return [], ["no bisection: the report has broken jobs or steps"]
    ids, notes = open_bisections(db, loaded, vd.flight, regs)
    return ids, notes + [f"bisection {i} opened" for i in ids]


def run_cycle(
    db: Database,
    loaded: Loaded,
    branch: str,
    *,
    mailer: Mailer | None = None,
    run: RunFn | None = None,
    stopper: Stopper | None = None,
    new_flight: bool = True,
    bisect: bool = True,
) -> CycleResult:
    """One cycle of `branch` (see the module doc); resumes an interrupted one first.
    bisect=False opens no bisection (regressions are left to other means)."""
    loaded.branch(branch)
    run = run or (lambda d, lo, f: run_flight(d, lo, f))
    stopper = stopper or Stopper()
    mailer = mailer or mailer_for(loaded)
    res = CycleResult(branch, "idle")
    try:
        _locked_cycle(db, loaded, branch, run, stopper, mailer, new_flight, bisect, res)
    except LockLost as e:
        # Its connection dropped: another process may hold the branch now. Nothing more
        # is done under it; every stage is recorded, so the next cycle resumes this one.
        res.action = "stopped"
        res.notes.append(f"{e}: the cycle stopped, to resume next time")
    deliver_due(db, mailer)
    return res


def _locked_cycle(
    db: Database,
    loaded: Loaded,
    branch: str,
    run: RunFn,
    stopper: Stopper,
    mailer: Mailer,
    new_flight: bool,
    bisect: bool,
    res: CycleResult,
) -> None:
    with db_lock(db, f"branch-{branch}") as held:
        cyc = open_cycle(db, loaded, branch, new_flight=False)
        if cyc is None and new_flight:
            # A tested revision whose push failed, or was blocked and is no longer, is
            # pushed now, without a new flight; then a flight is planned as usual.
            retried = retry_push(db, loaded, branch)
            if retried is not None:
                res.action, res.flight, res.push = "push", retried.flight, retried
                res.reason = "a tested revision's push carried out"
                res.notes.append(f"flight {retried.flight} push: {push_line(retried)}")
                if enqueue_late_push(db, loaded, retried):
                    res.notes.append(f"flight {retried.flight}: the late push is mailed")
            try:
                cyc = open_cycle(db, loaded, branch, new_flight=True)
            except GitError as e:
                if retried is None or retried.status not in ("failed", "refused"):
                    raise
                # The remote that just failed the push is likely what planning needs
                # too: the failed push is the news, and it is tried again next cycle.
                res.notes.append(f"no new flight planned: {e}")
                cyc = None
        if cyc is not None:
            res.push = None
            res.flight, res.reason = cyc.flight, cyc.reason
            res.action = _advance(db, loaded, cyc, run, stopper, res, mailer, bisect, held)


def _advance(
    db: Database,
    loaded: Loaded,
    cyc: dbc.CycleRow,
    run: RunFn,
    stopper: Stopper,
    res: CycleResult,
    mailer: Mailer,
    bisect: bool,
    lock: HeldLock,
) -> str:
    flight = cyc.flight
    state, cyc = advance_gate(db, loaded, cyc, run, stopper, res.notes, lock)
    if state == "stopped":
        return "stopped"
    lock.check()
    if cyc.stage == "report":
        rep = build_report(db, loaded, flight)
        enqueue_report(db, loaded, rep)
        with db.write() as conn:
            dbc.set_stage(conn, flight, "bisect")
        res.report = rep
        pause_point("mail")
        # The report goes out now, before any bisection of its regressions starts.
        deliver_due(db, mailer)
        cyc = cycle_row(db, flight)
    if cyc.stage == "bisect":
        if stopper.stop:
            return "stopped"
        if bisect:
            vd = verdicts.stored(db, flight)
            if vd is not None:
                res.bisections, notes = request_bisections(db, loaded, vd)
                res.notes += notes
        with db.write() as conn:
            dbc.set_stage(conn, flight, "done")
    if res.report is None:
        res.report = build_report(db, loaded, flight)
    if res.push is None:
        with db.read() as conn:
            res.push = dbp.get_push(conn, flight)
    return "done"
