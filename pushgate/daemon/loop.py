"""`pushgate daemon`: keep every branch's gate cycling.

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

from pushgate.config import Loaded
from pushgate.db import cycles as dbc
from pushgate.db import mailqueue as dbm
from pushgate.db.engine import Database
from pushgate.gate.cycle import EXIT_STOPPED, plan_cycle
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

    def child_argv(self, branch: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pushgate.cli",
            "-c",
            str(self.loaded.path.resolve()),
            "branch",
            "run",
            "--quiet",
            branch,
        ]

    def has_work(self, branch: str) -> bool:
        """Does the branch need a cycle now? (fetches its trees)"""
        with self.db.read() as conn:
            if dbc.latest_cycle(conn, branch, open_only=True) is not None:
                return True
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
                if st.last_rc:
                    log.warning("branch %s: cycle exited with status %s", st.name, st.last_rc)
                st.child = None
                # A cycle that did something may have more to do (the input moved meanwhile).
                st.next_check = 0.0 if st.last_rc == 0 else time.time() + self.poll_s

    def step(self) -> None:
        """One pass: reap children, start due cycles, deliver due mail."""
        self.reap()
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

    def sleep_time(self) -> float:
        if any(st.child is not None for st in self.branches.values()):
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
            self.step()
            if self.once and all(st.cycles and st.child is None for st in self.branches.values()):
                break
            self.wake.clear()
            self.wake.wait(self.sleep_time())
        self.shutdown()
        failed = [st.name for st in self.branches.values() if st.last_rc]
        return 1 if failed else 0

    def shutdown(self) -> None:
        """Ask running cycles to stop after their current step and wait for them."""
        running = [st for st in self.branches.values() if st.child is not None]
        for st in running:
            assert st.child is not None
            if st.child.poll() is None:
                st.child.send_signal(signal.SIGTERM)
        deadline = time.time() + self.stop_timeout_s
        for st in running:
            assert st.child is not None
            try:
                st.child.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log.warning("branch %s: cycle did not stop; killing it", st.name)
                st.child.kill()
                st.child.wait()
        self.reap()


def run_daemon(
    db: Database,
    loaded: Loaded,
    *,
    poll_s: float = DEFAULT_POLL_S,
    once: bool = False,
    mailer: Mailer | None = None,
) -> int:
    return Daemon(db, loaded, poll_s=poll_s, once=once, mailer=mailer).run()
