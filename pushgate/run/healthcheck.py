"""The health check before a host is used again (runner.health_check_job).

A host that went bad by breaking jobs, whose worker was reaped while it held a job, or
that a person set `unknown`, is due a check (hosts.check_due): it is given no job but
the health-check job. The checker, run by every worker's heartbeat (and by a flight run
of its own), queues one `health-check` flight for each such host: the config's
health-check job alone, pinned to the host (runvar `check_host`), first in the queue.
Passing makes the host good (runner.JobRun); ending any other way makes it bad, and
no check is tried again until a person sets it `unknown` (a check that starved, the
host being held meanwhile, is queued again).
"""

from __future__ import annotations

import time

from pushgate.config import Loaded
from pushgate.db import flights as dbf
from pushgate.db import hosthealth
from pushgate.db.engine import Database
from pushgate.git import GitError
from pushgate.model import Status
from pushgate.paths import mirror
from pushgate.run.plan import Tuple, job_runvars

CHECK = "health-check"
# The runvar pinning a health-check job to its host.
CHECK_HOST = "check_host"


class _Raced(Exception):
    """Another checker queued the host's check first."""


def _branch_of(loaded: Loaded, job: str) -> str:
    branches = list(loaded.cfg.branches)
    return next((b for b in branches if job in loaded.branch_jobs(b)), branches[0])


def make_check_flight(db: Database, loaded: Loaded, host: str) -> int | str:
    """Queue the host's health-check flight; its number, or why not."""
    job = loaded.cfg.runner.health_check_job
    assert job is not None
    branch = _branch_of(loaded, job)
    revs: dict[str, str] = {}
    for t in loaded.job_trees(branch, job):
        tc, m = loaded.trees[t], mirror(loaded, t)
        for ref in (tc.tested_ref, tc.input_ref):
            try:
                revs[t] = m.resolve(ref)
                break
            except GitError:
                continue
        else:
            return f"tree {t} has no revision in its mirror yet"
    runvars = {**job_runvars(loaded, branch, job, Tuple(revs, {})), CHECK_HOST: host}
    urls: dict[str, tuple[str, str, str | None]] = {
        t: (r, loaded.trees[t].url, None) for t, r in revs.items()
    }
    try:
        with db.write() as conn:
            flight = dbf.create_flight(
                conn,
                branch=branch,
                intended=CHECK,
                bless_as=CHECK,
                revisions=urls,
                new_jobs=[dbf.NewJob(job, runvars, {})],
            )
            if not hosthealth.set_check_flight(conn, host, flight, None):
                raise _Raced
    except _Raced:
        return "another worker queued it"
    return flight


def run_checks(db: Database, loaded: Loaded, me: str) -> tuple[list[int], list[str]]:
    """Settle ended health checks and queue those due; (check flights queued, notes)."""
    job = loaded.cfg.runner.health_check_job
    if job is None:
        return [], []
    flags = frozenset(loaded.jobs[job].hostflags)
    now = time.time()
    with db.read() as conn:
        due = hosthealth.checks_due(conn, job, now)
    queued: list[int] = []
    notes: list[str] = []
    for d in due:
        if d.flight is not None and d.finished is None:
            queued.append(d.flight)
            continue
        if d.flight is not None:
            with db.write() as conn:
                if d.status == Status.STARVED:
                    hosthealth.set_check_flight(conn, d.host, None, d.flight)
                    notes.append(f"host {d.host}: health check {d.flight} starved; queued again")
                    continue
                if hosthealth.check_failed(conn, d.host, d.flight, d.status or "-", me):
                    notes.append(f"host {d.host}: health check {d.flight} {d.status}: bad")
            continue
        if d.held or d.health == "maintenance" or not flags <= d.flags:
            continue  # not now (held), or a person's to decide (no check fits it)
        got = make_check_flight(db, loaded, d.host)
        if isinstance(got, int):
            queued.append(got)
            notes.append(f"host {d.host}: health check queued (flight {got})")
    return queued, notes
