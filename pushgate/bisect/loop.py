"""Bisections beside the gate: search every open bisection to its end.

A gate cycle only opens bisections (daemon.cycle); this loop, run by `pushgate daemon`
and `pushgate bisect run`, searches them. Each bisection is searched under its own lock,
so two processes share the work without searching one twice, and the branch's cycle
(under the branch lock) goes on testing meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from pushgate.bisect.runner import BisectResult, bisect
from pushgate.config import Loaded
from pushgate.db import bisections as dbb
from pushgate.db.engine import Database
from pushgate.gate.locks import LockBusy, db_lock
from pushgate.publish.mail.outbox import deliver_due, mailer_for
from pushgate.publish.mail.transport import Mailer


def open_bisections(db: Database) -> list[dbb.BisectionRow]:
    with db.read() as conn:
        return [b for b in dbb.list_bisections(conn, limit=1000) if b.status == "running"]


def run_open(
    db: Database,
    loaded: Loaded,
    *,
    mailer: Mailer | None = None,
    say: Callable[[str], None] | None = None,
) -> list[BisectResult]:
    """Search each open bisection of a configured branch to its end (oldest first), and
    deliver the mail they queued. Bisections another process holds are skipped."""
    out: list[BisectResult] = []
    for row in sorted(open_bisections(db), key=lambda b: b.id):
        if row.branch not in loaded.branches:
            continue
        try:
            with db_lock(db, f"bisect-{row.branch}-{row.job}-{row.testid}", wait=False):
                out.append(bisect(db, loaded, row.branch, row.job, row.testid, say=say))
        except LockBusy:
            continue
    deliver_due(db, mailer or mailer_for(loaded))
    return out
