"""Bisections beside the gate: search open bisections to their end.

A gate cycle only opens bisections (daemon.cycle); `pushgate bisect run [ID]` and the
daemon's bisection loop (one `bisect run ID` child at a time per range) search them.
Each is searched under its range's lock, not the branch's, so the branch goes on testing
meanwhile. Bisections of one branch over the same revision range (the regressions of one
flight) share that lock and their probe flights (runner.make_probe_flight runs every
open one's job): the first is searched, and the others mostly conclude from its flights.
"""

from __future__ import annotations

from collections.abc import Callable

from pushgate.bisect.runner import (
    BisectError,
    BisectResult,
    BisectStopped,
    bisect,
    open_bisection,
    range_lock,
)
from pushgate.config import Loaded
from pushgate.db import bisections as dbb
from pushgate.db.engine import Database
from pushgate.gate.locks import LockBusy, db_lock
from pushgate.publish.mail.outbox import deliver_due, mailer_for
from pushgate.publish.mail.transport import Mailer

Say = Callable[[str], None]
Stop = Callable[[], bool]


def open_bisections(db: Database) -> list[dbb.BisectionRow]:
    with db.read() as conn:
        return dbb.running(conn)


def search(
    db: Database,
    loaded: Loaded,
    row: dbb.BisectionRow,
    *,
    say: Say | None = None,
    stop: Stop | None = None,
    wait: bool = True,
) -> BisectResult | None:
    """Search one open bisection to its end under its range lock; None when another
    process ended it meanwhile. LockBusy when wait=False and the range is being searched;
    BisectStopped when asked to stop (it resumes next time)."""
    with db_lock(db, range_lock(row), wait=wait):
        with db.read() as conn:
            cur = dbb.get_bisection(conn, row.id)
        if cur is None or cur.status != "running":
            return None
        return bisect(db, loaded, cur.branch, cur.job, cur.testid, say=say, stop=stop)


def run_one(
    db: Database,
    loaded: Loaded,
    bid: int,
    *,
    mailer: Mailer | None = None,
    say: Say | None = None,
    stop: Stop | None = None,
) -> tuple[dbb.BisectionRow, BisectResult | None]:
    """`pushgate bisect run ID`: search bisection ID if it is open (waiting for its
    range's lock), deliver its mail; returns its row as it ended and the result."""
    with db.read() as conn:
        row = dbb.get_bisection(conn, bid)
    if row is None:
        raise BisectError(f"bisection {bid} does not exist")
    loaded.branch(row.branch)
    res = None
    if row.status == "running":
        res = search(db, loaded, row, say=say, stop=stop)
        deliver_due(db, mailer or mailer_for(loaded))
    with db.read() as conn:
        end = dbb.get_bisection(conn, bid)
    assert end is not None
    return end, res


def run_open(
    db: Database,
    loaded: Loaded,
    *,
    mailer: Mailer | None = None,
    say: Say | None = None,
    stop: Stop | None = None,
) -> list[BisectResult]:
    """Search each open bisection of a configured branch to its end (oldest first), and
    deliver the mail they queue. Ranges another process is searching are skipped."""
    out: list[BisectResult] = []
    try:
        for row in open_bisections(db):
            if row.branch not in loaded.branches:
                continue
            try:
                res = search(db, loaded, row, say=say, stop=stop, wait=False)
            except LockBusy:
                continue
            if res is not None:
                out.append(res)
    finally:
        deliver_due(db, mailer or mailer_for(loaded))
    return out


def bisect_one(
    db: Database,
    loaded: Loaded,
    branch: str,
    job: str,
    testid: str,
    good: dict[str, str] | None = None,
    bad: dict[str, str] | None = None,
    *,
    hosts: int = 1,
    say: Say | None = None,
    stop: Stop | None = None,
) -> BisectResult:
    """`pushgate bisect BRANCH JOB TESTID`: open (or resume) the bisection and search it
    under its range lock, as the loop does."""
    row, _ = open_bisection(db, loaded, branch, job, testid, good, bad)
    with db_lock(db, range_lock(row)):
        return bisect(db, loaded, branch, job, testid, good, bad, hosts=hosts, say=say, stop=stop)


__all__ = ["BisectStopped", "bisect_one", "open_bisections", "run_one", "run_open", "search"]
