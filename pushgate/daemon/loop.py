"""`pushgate daemon`: keep every branch's gate cycling, and search the bisections the
cycles open.

The daemon is a supervisor. Each branch's cycle runs in its own process
(`pushgate branch run BRANCH`), so a branch's flight, its signal handling and its
crash are its own; branches run in parallel (their jobs share the hosts through the
scheduler's slot claims) and one branch never has two cycles at once (one child per
branch, and the cycle's branch lock). All state is in the database, so a daemon that
is restarted - even after kill -9 - starts children that resume where the cycles
stopped.

Between cycles the daemon is idle-cheap: every `poll` seconds (or at a branch's next
cron time, if sooner) it fetches each idle branch's trees and compares revisions in
process, and starts a child only when a cycle has work (an unfinished cycle, a moved
input, an untested baseline, a force, or the schedule). Due mail is delivered from the
queue in process. SIGTERM/SIGINT: stop starting cycles, pass SIGTERM to the children
(each stops after its current step, leaving its flight resumable), wait for them, exit.

Bisections run beside the cycles, in their own children (`pushgate bisect run ID`), one
at a time per revision range (the bisections of one flight's regressions share their
probe flights, bisect.loop) and ranges in parallel, with the branch cycles. The daemon
logs a line when it starts one and when it ends; a bisection whose child failed is
tried again a poll later.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

from sqlalchemy.exc import OperationalError

from pushgate.bisect.runner import range_lock
from pushgate.config import Loaded
from pushgate.daemon.retention import daily_gc
from pushgate.db import bisections as dbb
from pushgate.db import cycles as dbc
from pushgate.db import mailqueue as dbm
from pushgate.db.engine import Database
from pushgate.errors import (
    EXIT_BROKEN,
    EXIT_INTERRUPTED,
    EXIT_NOT_PASSED,
    EXIT_OK,
    worst_exit,
)
from pushgate.gate.cycle import EXIT_STOPPED, plan_cycle
from pushgate.gate.push import retry_due
from pushgate.git import GitError
from pushgate.publish.mail.outbox import deliver_due, mailer_for
from pushgate.publish.mail.transport import Mailer
from pushgate.run.plan import FlightError

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 60.0
CHILD_POLL_S = 0.5


@dataclass
class BranchState:
    name: str
    child: subprocess.Popen[bytes] | None = None
    next_check: float = 0.0
    cycles: int = 0
    last_rc: int | None = None


@dataclass
class BisectChild:
    id: int
    what: str
    proc: subprocess.Popen[bytes]


@dataclass
class Daemon:
    db: Database
    loaded: Loaded
    poll_s: float = DEFAULT_POLL_S
    once: bool = False
    mailer: Mailer | None = None
    stop_timeout_s: float = 600.0
    branches: dict[str, BranchState] = field(default_factory=dict)
    wake: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    bisecting: dict[str, BisectChild] = field(default_factory=dict)
    """The running bisection child of each revision range (by its lock name)."""
    bisect_after: dict[int, float] = field(default_factory=dict)
    """Bisection id -> when it may be started again (after a failed child; once: never)."""
    failed_bisections: int = 0
    gc_due: float = 0.0
    """When retention runs next (daemon.retention.daily_gc: now, then every interval_h)."""

    def __post_init__(self) -> None:
        self.branches = {b: BranchState(b) for b in self.loaded.branches}
        self.mailer = self.mailer or mailer_for(self.loaded)

    # -- signals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.wake.set()

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # Wake the loop when a child ends, so the next cycle starts without a poll delay.
        signal.signal(signal.SIGCHLD, lambda s, f: self.wake.set())

    # -- the loop ---------------------------------------------------------------------------

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pushgate.cli", "-c", str(self.loaded.path.resolve()), *args]

    def child_argv(self, branch: str) -> list[str]:
        return self.cli_argv("branch", "run", "--quiet", branch)

    def bisect_argv(self, bid: int) -> list[str]:
        return self.cli_argv("bisect", "run", "--quiet", str(bid))

    def start_bisections(self) -> None:
        """Start a child for each open bisection whose range has none running."""
        with self.db.read() as conn:
            rows = dbb.running(conn)
        now = time.time()
        for row in rows:
            key = range_lock(row)
            if row.branch not in self.branches or key in self.bisecting:
                continue
            if self.bisect_after.get(row.id, 0.0) > now:
                continue
            what = f"{row.branch} {row.job} {row.testid}"
            log.info("bisection %d started: %s", row.id, what)
            proc = subprocess.Popen(self.bisect_argv(row.id), stdin=subprocess.DEVNULL)
            self.bisecting[key] = BisectChild(row.id, what, proc)
            if self.once:
                self.bisect_after[row.id] = float("inf")

    def reap_bisections(self) -> None:
        for key, ch in list(self.bisecting.items()):
            rc = ch.proc.poll()
            if rc is None:
                continue
            del self.bisecting[key]
            with self.db.read() as conn:
                row = dbb.get_bisection(conn, ch.id)
            status = row.status if row is not None else "gone"
            culprit = (
                f" {row.culprit_tree} {row.culprit_commit}" if row and row.culprit_commit else ""
            )
            log.info("bisection %d ended: %s%s (exit %s)", ch.id, status, culprit, rc)
            stopped = self.stopping and rc in (EXIT_STOPPED, -signal.SIGTERM)
            if status == "running" and not stopped:
                self.failed_bisections += 1
                log.warning("bisection %d: child exited with status %s", ch.id, rc)
                self.bisect_after[ch.id] = max(
                    self.bisect_after.get(ch.id, 0.0), time.time() + self.poll_s
                )

    def has_work(self, branch: str) -> bool:
        """Does the branch need a cycle now? (fetches its trees)"""
        with self.db.read() as conn:
            if dbc.latest_cycle(conn, branch, open_only=True) is not None:
                return True
        if retry_due(self.db, self.loaded, branch) is not None:
            return True  # a tested revision's push to carry out
        try:
            return plan_cycle(self.db, self.loaded, branch) is not None
        except (FlightError, GitError) as e:
            log.warning("branch %s: %s", branch, e)
            return False

    def next_schedule(self, branch: str, now: float) -> float:
        sched = self.loaded.branches[branch].schedule
        if not sched:
            return now + self.poll_s
        from croniter import croniter

        nxt = float(croniter(sched, datetime.fromtimestamp(now, UTC)).get_next(float))
        return min(now + self.poll_s, nxt + 0.5)

    def start(self, st: BranchState) -> None:
        log.info("branch %s: starting a cycle", st.name)
        st.child = subprocess.Popen(self.child_argv(st.name), stdin=subprocess.DEVNULL)
        st.cycles += 1

    def reap(self) -> None:
        for st in self.branches.values():
            if st.child is not None and st.child.poll() is not None:
                st.last_rc = st.child.returncode
                if self.stopping and st.last_rc in (EXIT_STOPPED, -signal.SIGTERM):
                    st.last_rc = 0  # stopped as asked; the cycle resumes next time
                # 0 passed and 1 not pushed are a cycle's normal ends (README "Exit codes").
                normal = st.last_rc in (EXIT_OK, EXIT_NOT_PASSED)
                if not normal:
                    log.warning("branch %s: cycle exited with status %s", st.name, st.last_rc)
                st.child = None
                # A cycle that did something may have more to do (the input moved meanwhile).
                st.next_check = 0.0 if normal else time.time() + self.poll_s

    def step(self) -> None:
        """One pass: reap children, start due cycles and bisections, deliver due mail."""
        self.reap()
        self.reap_bisections()
        if not self.stopping:
            self.start_bisections()
        now = time.time()
        for st in self.branches.values():
            if self.stopping:
                break
            if st.child is not None or now < st.next_check:
                continue
            if self.once:
                if st.cycles == 0:
                    self.start(st)
                continue
            if self.has_work(st.name):
                self.start(st)
            else:
                st.next_check = self.next_schedule(st.name, time.time())
        assert self.mailer is not None
        deliver_due(self.db, self.mailer)
        if not self.stopping:
            self.gc_due = daily_gc(self.db, self.loaded, self.gc_due)

    def sleep_time(self) -> float:
        if self.bisecting or any(st.child is not None for st in self.branches.values()):
            return CHILD_POLL_S
        now = time.time()
        t = min((st.next_check for st in self.branches.values()), default=now + self.poll_s)
        with self.db.read() as conn:
            mail_at = dbm.next_mail_due(conn)
        if mail_at is not None:
            t = min(t, mail_at)
        return max(0.05, min(t - now, self.poll_s))

    def run(self) -> int:
        self.install_signals()
        while not self.stopping:
            try:
                self.step()
                if self.once and self.once_done():
                    break
                self.wake.clear()
                wait = self.sleep_time()
            except OperationalError as e:
                # The database went away (a restart, a cut): wait and try again. Every
                # step is idempotent and the cycles resume from what they committed.
                log.warning("database unreachable, retrying in %gs: %s", self.poll_s, e.orig)
                self.wake.clear()
                wait = self.poll_s
            self.wake.wait(wait)
        self.shutdown()
        # --once exits as `branch run` does (the most severe of its cycles'); a daemon
        # stopped by a signal, which it was made for, exits 0 unless a cycle failed.
        codes = [st.last_rc for st in self.branches.values()]
        codes += [EXIT_BROKEN] if self.failed_bisections else []
        if self.once:
            return EXIT_INTERRUPTED if self.stopping else worst_exit(codes)
        code = worst_exit(codes)
        return EXIT_OK if code == EXIT_NOT_PASSED else code

    def once_done(self) -> bool:
        """--once: every branch had its cycle, and the bisections open were searched."""
        if self.bisecting or not all(
            st.cycles and st.child is None for st in self.branches.values()
        ):
            return False
        self.start_bisections()  # those the last cycles opened
        return not self.bisecting

    def shutdown(self) -> None:
        """Ask running cycles and bisections to stop after their current step and wait."""
        running = [st for st in self.branches.values() if st.child is not None]
        for st in running:
            assert st.child is not None
            if st.child.poll() is None:
                st.child.send_signal(signal.SIGTERM)
        for ch in self.bisecting.values():
            if ch.proc.poll() is None:
                ch.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + self.stop_timeout_s
        for ch in self.bisecting.values():
            try:
                ch.proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log.warning("bisection %d did not stop; killing it", ch.id)
                ch.proc.kill()
                ch.proc.wait()
        for st in running:
            assert st.child is not None
            try:
                st.child.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log.warning("branch %s: cycle did not stop; killing it", st.name)
                st.child.kill()
                st.child.wait()
        self.reap()
        self.reap_bisections()


def run_daemon(
    db: Database,
    loaded: Loaded,
    *,
    poll_s: float = DEFAULT_POLL_S,
    once: bool = False,
    mailer: Mailer | None = None,
) -> int:
    return Daemon(db, loaded, poll_s=poll_s, once=once, mailer=mailer).run()
