"""Run a flight: order jobs by their build dependencies, claim host slots, run jobs.

Several `flight run` processes (or farm workers) may work on one flight: a job
is claimed by a conditional update, a slot likewise, and both carry a lease
kept alive by heartbeats. A run that finds jobs of a dead runner kills the
orphaned step processes and requeues the jobs (or breaks them after repeated
attempts), so a `kill -9` never leaves a step `running` for good.

Leases are fenced (invariant 8): a claim gives the job a new attempt, and every
write for the job names its attempt, so a runner that was stopped past its
lease and taken over cannot write when it resumes. A take-over first moves the
job to a new attempt, then kills the old attempt's processes (on this machine),
and only then frees its slot and requeues the job. A runner that finds its
lease lost kills the job's processes and leaves the job's records alone.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import signal
import socket
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from sqlalchemy import Connection

from pushgate.config import Loaded
from pushgate.db import farm as dbfarm
from pushgate.db import flights as dbf
from pushgate.db import hosthealth
from pushgate.db import hosts as dbh
from pushgate.db.engine import Database
from pushgate.db.history import compute_flight_built
from pushgate.errors import PushgateError
from pushgate.model import ACTIVE_JOB_STATUSES, FINAL_JOB_STATUSES, Status
from pushgate.run import healthcheck, isolation
from pushgate.run.executors.base import Executor
from pushgate.run.executors.local import LocalExecutor, kill_marked, kill_orphans
from pushgate.run.runner import (
    GroupWriter,
    Interrupted,
    JobRun,
    Progress,
    RunContext,
    block_job,
    starve_job,
)

# A job interrupted this many times is marked broken rather than retried again.
MAX_ATTEMPTS = 3
POLL_S = 0.5


class FlightRunError(PushgateError):
    pass


def runner_id(machine: str | None = None) -> str:
    """A runner's (a worker's) id: machine:pid:start. The machine defaults to the host
    name; a runner of another machine is presumed dead only when its lease runs out."""
    return f"{machine or socket.gethostname()}:{os.getpid()}:{int(_proc_start())}"


class Executors:
    """The executor of each host, by its config's `executor`: one local executor for
    every local host, one executor a remote host (made when a job first runs there).

    `ssh` hosts use `pushgate.run.executors.ssh.SSHExecutor(loaded, host)` (asyncssh),
    imported only when such a host is used.
    """

    def __init__(self, loaded: Loaded, local: Executor | None = None):
        self.loaded = loaded
        self.local = local or LocalExecutor()
        self.remote: dict[str, Executor] = {}

    def start(self) -> None:
        self.local.start()

    def __call__(self, host: str) -> Executor:
        hc = self.loaded.cfg.hosts.get(host)
        kind = getattr(hc, "executor", "local") if hc is not None else "local"
        if kind == "local":
            return self.local
        ex = self.remote.get(host)
        if ex is None:
            ex = self.remote[host] = make_executor(self.loaded, host, kind)
            ex.start()
        return ex

    async def close(self) -> None:
        for ex in [self.local, *self.remote.values()]:
            await ex.close()
        self.remote.clear()


def make_executor(loaded: Loaded, host: str, kind: str) -> Executor:
    """A remote host's executor, by kind (`ssh`)."""
    if kind == "ssh":
        mod = importlib.import_module("pushgate.run.executors.ssh")
        ex: Executor = mod.SSHExecutor(loaded, host)
        return ex
    raise FlightRunError(f"host {host}: no executor {kind!r}")


def _proc_start(pid: int | None = None) -> float:
    """Start time of a process in clock ticks since boot (tells a reused pid apart)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat") as f:
            return float(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0.0


def runner_dead(rid: str | None) -> bool:
    """True when `rid` names a runner on this machine whose process is gone."""
    if not rid:
        return True
    try:
        host, pid_s, start_s = rid.rsplit(":", 2)
        pid, start = int(pid_s), float(start_s)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False  # another machine's runner: only its lease tells
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _proc_start(pid) != start


def check_isolation(loaded: Loaded) -> None:
    """No step runs unless it can be isolated as configured (one line, exit 2)."""
    isolation.check(loaded, loaded.database_url, any(j.network for j in loaded.jobs.values()))


def sync_config_hosts(db: Database, loaded: Loaded) -> None:
    with db.write() as conn:
        dbh.sync_hosts(
            conn, {n: (h.executor, h.slots, h.flags) for n, h in loaded.cfg.hosts.items()}
        )


def kill_attempt(runner: str, flight: int, job: str, attempt: int) -> int:
    """Kill the process groups of one attempt's steps on this machine."""
    return kill_marked(
        {
            "PUSHGATE_RUNNER": runner,
            "PUSHGATE_FLIGHT": str(flight),
            "PUSHGATE_JOB": job,
            "PUSHGATE_ATTEMPT": str(attempt),
        }
    )


def on_stop_signals(handler: Callable[[], None] | None) -> None:
    """Call handler on SIGINT and SIGTERM (where the running loop can take signals);
    None: no more."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if handler is None:
                loop.remove_signal_handler(sig)
            else:
                loop.add_signal_handler(sig, handler)
        except (NotImplementedError, RuntimeError):
            pass


def _on_this_machine(rid: str) -> bool:
    return rid.rsplit(":", 2)[0] == socket.gethostname()


def recover(
    db: Database, flight: int, me: str, lease_s: float, *, check: bool = False
) -> list[str]:
    """Take over, then requeue or break, the jobs of dead runners and of runners whose
    lease ran out; returns what was done, for the log. `check`: a health-check job is
    configured, and their hosts take no other job until it passes on them."""
    done = []
    now = time.time()
    with db.read() as conn:
        runners = dbf.active_runners(conn, flight)
        dead = {r for r in runners if runner_dead(r)}
        stale = dbf.stale_jobs(conn, flight, now, dead)
    for r in dead:
        if r:
            kill_orphans(r, flight)
    for s in stale:
        # First the job changes hands: the old attempt's writes are refused from here.
        with db.write() as conn:
            now = time.time()
            mine = dbf.take_over(conn, s, me, now + lease_s, now)
        if mine is None:
            continue  # its runner renewed its lease in time, or another runner took it
        # Then its steps go: a runner stopped (not dead) left them running.
        if s.runner and not s.dead and _on_this_machine(s.runner):
            kill_attempt(s.runner, flight, s.job, s.attempt)
        # Only then is its slot free for another job.
        with db.write() as conn:
            freed = dbh.release_job_slots(conn, flight, s.job, s.attempt)
            what = "died" if s.dead or s.runner is None else "lost its lease"
            for host in freed:
                # What the vanished runner left on the host is unknown: checked before
                # reuse (with no health-check job configured, the host is `unknown`).
                dbh.needs_check(
                    conn,
                    host,
                    f"runner {s.runner} {what} running {flight}.{s.job}",
                    me,
                    check=check,
                )
            if s.attempts + 1 >= MAX_ATTEMPTS:
                dbf.break_job(
                    conn,
                    flight,
                    s.job,
                    f"runner {s.runner} {what} {s.attempts + 1} times running this job",
                    mine,
                )
                done.append(f"{s.job}: broken after {s.attempts + 1} interrupted attempts")
            elif dbf.requeue_job(conn, flight, s.job, mine):
                done.append(f"{s.job}: interrupted run of {s.runner} ({what}) requeued")
    return done


@dataclass
class _JobState:
    status: str
    deps: list[tuple[str, int, str]]
    flags: frozenset[str]
    runvars: dict[str, str]
    # The hosts that can run the job (the flight's hosts do not change during a run).
    eligible: list[str] | None = None


class _Queue:
    """The queued jobs of a flight run between two loads of its state.

    Kept up to date as jobs start and end, so that a scheduling round costs
    what it can start, not the size of the flight: a job waiting for its
    builds is looked at again only when one of them ends, and the scan of
    the startable jobs stops at the first that finds no free slot anywhere.
    """

    def __init__(self, state: dict[str, _JobState], taken: Container[str]):
        self.order = {j: i for i, j in enumerate(state)}
        # Startable (no build pending), in the flight's order.
        self.ready: dict[str, None] = {}
        # Waiting for a build to end.
        self.waiting: dict[str, None] = {}
        self.dependents: dict[tuple[int, str], list[str]] = {}
        # Waiting jobs to look at again: one of their builds ended.
        self.recheck: set[str] = set()
        # Jobs new to `ready`, whose hosts are still to be checked.
        self.fresh: list[str] = []
        for j, st in state.items():
            if st.status != Status.QUEUED or j in taken:
                continue
            self.add(j, st)

    def add(self, job: str, st: _JobState) -> None:
        if st.deps:
            self.waiting[job] = None
            self.recheck.add(job)
            for _, f, dj in st.deps:
                self.dependents.setdefault((f, dj), []).append(job)
        else:
            self.make_ready(job)

    def make_ready(self, job: str) -> None:
        self.waiting.pop(job, None)
        self.ready[job] = None
        self.fresh.append(job)

    def ended(self, flight: int, job: str) -> None:
        """A job reached a final status: look at its dependents again."""
        for d in self.dependents.get((flight, job), ()):
            if d in self.waiting:
                self.recheck.add(d)

    def discard(self, job: str) -> None:
        self.ready.pop(job, None)
        self.waiting.pop(job, None)
        self.recheck.discard(job)

    def __bool__(self) -> bool:
        return bool(self.ready or self.waiting)


@dataclass
class Shared:
    """What the flight runners of one worker process share: its id, executors, stop
    event and group writer. A flight run alone (`flight run`) makes its own."""

    worker: str
    executors: Executors
    stopping: asyncio.Event
    writer: GroupWriter
    # Queue order across flights: flight -> (its rank, the hosts its ready jobs wait
    # for). A runner leaves a host to a better-ranked flight's waiting job.
    waiting: dict[int, tuple[tuple[int, float, int], frozenset[str]]] = field(default_factory=dict)


class FlightRunner:
    def __init__(
        self,
        db: Database,
        loaded: Loaded,
        flight: int,
        *,
        progress: Progress | None = None,
        executor: Executor | None = None,
        shared: Shared | None = None,
    ):
        self.db = db
        self.loaded = loaded
        self.flight = flight
        # Part of a worker: it started the executors, watches signals and renews its own
        # lease; this runner ends when nothing of its flight is left for it to start.
        self.shared = shared
        with db.read() as conn:
            info = dbf.get_flight(conn, flight)
            # A retest prefers the host each job's failure happened on.
            self.prefer = dbfarm.failure_hosts(conn, flight)
        if info is None:
            raise FlightRunError(f"flight {flight} does not exist")
        self.info = info
        # Its place in the queue (priority, waiting since, flight): set by the worker.
        self.rank: tuple[int, float, int] = (0, info.created, flight)
        # A health-check flight: its job may use a bad host, or one due a check.
        self.check = info.intended == healthcheck.CHECK
        # Health-check flights this runner (alone in its process) runs beside its own.
        self.check_runs: dict[int, asyncio.Task[dict[str, str]]] = {}
        self._last_checks = 0.0
        executors = shared.executors if shared else Executors(loaded, executor)
        self.executors = executors
        self.ctx = RunContext(
            db=db,
            loaded=loaded,
            runner_id=shared.worker if shared else runner_id(),
            executor=executors.local,
            branch=info.branch,
            flight=flight,
            progress=progress or Progress(),
            executor_for=executors,
        )
        if shared is not None:
            self.ctx.stopping = shared.stopping
            self.ctx.writer = shared.writer
        # When each ready job was first found with no usable host (for `starved`).
        self.hostless_since: dict[str, float] = {}
        self._starve_check = 0.0
        self.tasks: dict[str, asyncio.Task[str]] = {}
        # The attempts this runner holds, by job (their leases are renewed by heartbeats).
        self.runs: dict[str, JobRun] = {}
        self.notes: list[str] = []
        self._queue = _Queue({}, {})
        self._queue_of: dict[str, _JobState] | None = None

    def _load(self) -> dict[str, _JobState]:
        with self.db.read() as conn:
            jobs = dbf.get_jobs(conn, self.flight)
            deps = dbf.job_deps_of(conn, self.flight)
            dep_status = dbf.job_statuses(conn, {(f, j) for ds in deps.values() for _, f, j in ds})
            # A job a host broke runs on another host (runner.host_retries).
            self.broke = hosthealth.hosts_that_broke(conn, self.flight)
        self.dep_status = dep_status
        return {
            j.job: _JobState(j.status, deps.get(j.job, []), _flags(j.runvars), j.runvars)
            for j in jobs
        }

    async def run(self) -> dict[str, str]:
        """Run every job that is not finished; returns job -> final status."""
        if self.shared is not None:
            return await self._run_in_worker()
        # No step runs unless it can be isolated as configured (one line, exit 2).
        check_isolation(self.loaded)
        # First: the executor's start-up (a helper process) overlaps what follows.
        self.executors.start()
        try:
            sync_config_hosts(self.db, self.loaded)
            # One worker in this process: listed by `pushgate workers` like the others.
            with self.db.write() as conn:
                dbfarm.register_worker(
                    conn,
                    self.ctx.runner_id,
                    socket.gethostname(),
                    os.getpid(),
                    self.loaded.cfg.runner.lease_s,
                )
            self.notes += self._recover()
        except BaseException:
            await self.executors.close()
            raise
        on_stop_signals(self._on_signal)
        hb = asyncio.create_task(self._heartbeat())
        try:
            await self._loop()
            if self.check_runs and not self.ctx.stopping.is_set():
                # Health checks it started end before their executors close.
                await asyncio.wait(self.check_runs.values())
        finally:
            hb.cancel()
            for t in self.check_runs.values():
                t.cancel()
            await self.executors.close()
            if self.ctx.writer is not None:
                self.ctx.writer.close()
            on_stop_signals(None)
            try:
                with self.db.write() as conn:
                    dbfarm.worker_stopped(conn, self.ctx.runner_id, f"flight {self.flight} run")
            except Exception:  # noqa: BLE001 - the worker row only informs `pushgate workers`
                pass
        return self._finish()

    async def _run_in_worker(self) -> dict[str, str]:
        hb = asyncio.create_task(self._heartbeat())
        try:
            await self._loop()
        finally:
            hb.cancel()
            assert self.shared is not None
            self.shared.waiting.pop(self.flight, None)
        return self._finish()

    def _finish(self) -> dict[str, str]:
        with self.db.write() as conn:
            # The built tuple is computed by whichever runner blesses the flight,
            # in the same transaction, so history never sees one without the other.
            if dbf.finish_flight_if_done(conn, self.flight):
                compute_flight_built(conn, self.flight)
        with self.db.read() as conn:
            return {j.job: j.status for j in dbf.get_jobs(conn, self.flight)}

    async def _heartbeat(self) -> None:
        """Renew the leases of the attempts we hold; a job whose lease is found lost is
        stopped at once (its task cancelled: its running step is killed)."""
        rc = self.loaded.cfg.runner
        # Alone in its process, the runner renews its worker row too (in the same commit).
        me = self.ctx.runner_id if self.shared is None else None
        while True:
            await asyncio.sleep(rc.heartbeat_s)
            runs = [r for r in self.runs.values() if not r.lost]
            if not runs and me is None:
                continue

            def beat(conn: Connection, runs: list[JobRun] = runs) -> list[JobRun]:
                if me is not None:
                    dbfarm.worker_beat(conn, me, rc.lease_s)
                lost = []
                for r in runs:
                    try:
                        r.renew(conn)
                    except dbf.LeaseLost:
                        lost.append(r)  # nothing written for it: the others' renewals stand
                return lost

            try:
                lost = await self.ctx.write(beat)
            except Exception as e:  # noqa: BLE001 - the next beat tries again
                # Unrenewed, a job starts no new step once its lease may have run out.
                self.notes.append(f"heartbeat failed: {e}")
                continue
            for r in lost:
                task = self.tasks.get(r.job)
                if task is not None:
                    task.cancel()

    async def _loop(self) -> None:
        state = self._load()
        with self.db.read() as conn:
            hosts = dbh.list_hosts(conn)
        last_recover = time.monotonic()
        while True:
            if not self.ctx.stopping.is_set():
                await self._health_checks()
                await self._start_ready(state, hosts)
            # Jobs not finished and not ours to wait for: queued ones, or ones other
            # runners hold (scanned only once nothing is queued: the flight's tail).
            queued = bool(self._queued(state))
            if self.shared is not None and not self.tasks and not queued:
                # A worker's runner: nothing left here to start; the worker looks for
                # more, and whoever ends the flight's last job finishes it.
                return
            pending = queued or any(
                s.status in ACTIVE_JOB_STATUSES and j not in self.tasks for j, s in state.items()
            )
            if not self.tasks and (not pending or self.ctx.stopping.is_set()):
                # Nothing of ours runs: done, unless other runners still hold jobs.
                state = self._load()
                if self.ctx.stopping.is_set() or not any(
                    s.status in ACTIVE_JOB_STATUSES for s in state.values()
                ):
                    return
                await asyncio.sleep(POLL_S)
                self.notes += self._recover()
                state = self._load()
                continue
            if self.tasks:
                done, _ = await asyncio.wait(
                    self.tasks.values(),
                    timeout=POLL_S if pending else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for t in done:
                    job = next(j for j, tk in self.tasks.items() if tk is t)
                    del self.tasks[job]
                    self._set_status(state, job, await self._result(job, t))
            else:
                # Our jobs wait for slots or jobs of other runners: if one of them
                # died meanwhile, its lease runs out and we take its work over.
                await asyncio.sleep(POLL_S)
                if time.monotonic() - last_recover > self.loaded.cfg.runner.heartbeat_s:
                    last_recover = time.monotonic()
                    self.notes += self._recover()
                state = self._load()

    def _recover(self) -> list[str]:
        rc = self.loaded.cfg.runner
        check = rc.health_check_job is not None
        return recover(self.db, self.flight, self.ctx.runner_id, rc.lease_s, check=check)

    async def _health_checks(self) -> None:
        """Alone in its process (no worker to do it): queue the health checks due, at
        most once a heartbeat, and run them beside this flight."""
        if self.shared is not None or self.loaded.cfg.runner.health_check_job is None:
            return
        if time.monotonic() - self._last_checks < self.loaded.cfg.runner.heartbeat_s:
            return
        self._last_checks = time.monotonic()
        for f, t in list(self.check_runs.items()):
            if t.done():
                del self.check_runs[f]
                if not t.cancelled() and t.exception() is not None:
                    self.notes.append(f"health check {f}: runner failed: {t.exception()!r}")
        queued, notes = await asyncio.to_thread(
            healthcheck.run_checks, self.db, self.loaded, self.ctx.runner_id
        )
        self.notes += notes
        if self.ctx.writer is None:
            self.ctx.writer = GroupWriter(self.db)
        shared = Shared(self.ctx.runner_id, self.executors, self.ctx.stopping, self.ctx.writer)
        for f in queued:
            if f not in self.check_runs and f != self.flight:
                fr = FlightRunner(self.db, self.loaded, f, shared=shared)
                self.check_runs[f] = asyncio.create_task(fr.run())

    def _on_signal(self) -> None:
        """First signal: stop after the current steps. Second: kill them now.

        Either way the interrupted jobs go back to the queue for the next run.
        """
        if self.ctx.stopping.is_set():
            for t in self.tasks.values():
                t.cancel()
        self.ctx.stopping.set()

    async def _result(self, job: str, task: asyncio.Task[str]) -> str:
        run = self.runs.pop(job)
        if not task.cancelled() and task.exception() is None:
            if run.rerun:
                self.broke.setdefault(job, set()).add(run.claim.host)
                self.notes.append(f"{job}: host {run.claim.host} broke it; rerun on another host")
            return task.result()
        exc = None if task.cancelled() else task.exception()
        if run.lost or isinstance(exc, dbf.LeaseLost):
            return await self._lost(run)
        if exc is None or isinstance(exc, Interrupted):

            def requeue(conn: Connection) -> bool:
                dbh.release_slot(conn, run.claim, self.flight, job)
                return dbf.requeue_job(conn, self.flight, job, run.attempt)

            if not await self.ctx.write(requeue):
                return await self._lost(run)
            self.notes.append(f"{job}: interrupted, requeued")
            return Status.QUEUED

        # A harness bug must not leave the job running: break it and carry on.
        def broken(conn: Connection) -> bool:
            dbh.release_slot(conn, run.claim, self.flight, job)
            return dbf.break_job(conn, self.flight, job, f"harness error: {exc!r}", run.attempt)

        if not await self.ctx.write(broken):
            return await self._lost(run)
        self.notes.append(f"{job}: harness error {exc!r}")
        return Status.BROKEN

    async def _lost(self, run: JobRun) -> str:
        """The job was taken over: kill what its steps left, write nothing of the job's
        (only fenced no-ops), leave the new attempt's dirs alone and drop our own."""
        run.lost = True
        await asyncio.to_thread(kill_attempt, self.ctx.runner_id, self.flight, run.job, run.attempt)

        def give_back(conn: Connection) -> bool:
            # Only if the job is still ours (just its slot was lost): back to the queue.
            dbh.release_slot(conn, run.claim, self.flight, run.job)
            return dbf.requeue_job(conn, self.flight, run.job, run.attempt)

        if await self.ctx.write(give_back):
            self.notes.append(f"{run.job}: its slot was taken over; requeued")
            status = Status.QUEUED
        else:
            self.notes.append(
                f"{run.job}: lease lost (attempt {run.attempt} taken over); its steps "
                "killed, its records left to the new attempt"
            )
            status = Status.RUNNING  # another runner's now
        await asyncio.to_thread(run.remove_own_dirs)
        return status

    def _dep_state(self, st: _JobState) -> tuple[bool, list[str]]:
        """(all deps final, the deps that did not pass)."""
        final, bad = True, []
        for _, f, j in st.deps:
            s = self.dep_status.get((f, j))
            if s is None or s not in FINAL_JOB_STATUSES:
                final = False
            elif s != Status.PASS:
                bad.append(j if f == self.flight else f"{f}.{j}")
        return final, bad

    def _free_slots(self) -> dict[str, int]:
        """Free slots of the hosts a job may be allocated now (healthy, not held)."""
        with self.db.read() as conn:
            return dbh.free_slots(conn, check=self.check)

    async def _starve_hostless(self, state: dict[str, _JobState], queue: _Queue) -> None:
        """A ready job none of whose hosts can be had (no host has its flags, or they are
        bad, in maintenance or held by a person) starves once it has waited
        `runner.starve_after_s` so; a job that merely waits for a busy host does not."""
        now = time.monotonic()
        if not queue.ready or now - self._starve_check < 1.0:
            return  # once a second at most: a query of its own
        self._starve_check = now
        usable = self._free_slots().keys()
        wait = self.loaded.cfg.runner.starve_after_s
        for job in list(queue.ready):
            st = state[job]
            if st.status != Status.QUEUED or job in self.tasks:
                continue
            if any(h in usable for h in st.eligible or ()):
                self.hostless_since.pop(job, None)
                continue
            since = self.hostless_since.setdefault(job, now)
            if now - since < wait:
                continue
            want = ",".join(sorted(st.flags)) or "-"
            pinned = dbfarm.pinned_host(st.runvars)
            where = f" and is {pinned}" if pinned else ""
            if st.eligible:
                why = (
                    f"no usable host with flags {want}{where} for {wait:g}s"
                    " (bad, in maintenance or held)"
                )
            else:
                why = f"no host has flags {want}{where}"
                if wait:
                    why += f" (waited {wait:g}s)"
            await starve_job(self.ctx, job, why)
            self._set_status(state, job, Status.STARVED)

    def _queued(self, state: dict[str, _JobState]) -> _Queue:
        """The queue of the jobs not yet taken, made anew when the state is reloaded."""
        if self._queue_of is not state:
            self._queue_of = state
            self._queue = _Queue(state, self.tasks)
        return self._queue

    def _set_status(self, state: dict[str, _JobState], job: str, status: str) -> None:
        state[job].status = status
        self.dep_status[(self.flight, job)] = status
        queue = self._queued(state)
        queue.discard(job)
        if status == Status.QUEUED:
            queue.add(job, state[job])  # interrupted: to be run again
        elif status in FINAL_JOB_STATUSES:
            queue.ended(self.flight, job)

    async def _start_ready(self, state: dict[str, _JobState], hosts: list[dbh.HostRow]) -> None:
        queue = self._queued(state)
        # Jobs one of whose builds ended: blocked if it failed, startable once all passed.
        for job in sorted(queue.recheck, key=queue.order.__getitem__):
            queue.recheck.discard(job)
            st = state[job]
            final, bad = self._dep_state(st)
            if not final:
                continue
            if bad:
                dep_st = {self.dep_status.get((f, j)) for _, f, j in st.deps}
                status = Status.STARVED if Status.STARVED in dep_st else Status.BLOCKED
                await block_job(self.ctx, job, status, f"buildjob {', '.join(bad)} did not pass")
                self._set_status(state, job, status)
                continue
            queue.make_ready(job)
        fresh, queue.fresh = queue.fresh, []
        for job in fresh:
            st = state[job]
            if st.status != Status.QUEUED or job in self.tasks:
                continue
            # A bisection probe is pinned to the host of the failure it reproduces, a
            # health check to the host it checks.
            pinned = dbfarm.pinned_host(st.runvars)
            st.eligible = [
                h.host
                for h in hosts
                if st.flags <= h.flags
                and (pinned is None or h.host == pinned)
                and h.host not in self.broke.get(job, ())
            ]
            prefer = self.prefer.get(job)
            if prefer in st.eligible:
                # A retest: the failure's host first, others if it cannot be had.
                st.eligible.remove(prefer)
                st.eligible.insert(0, prefer)
        # A job no host can run starves after runner.starve_after_s (at once with 0).
        await self._starve_hostless(state, queue)
        # Read the slots lazily: most rounds (a job ended) start one job or none.
        free: dict[str, int] | None = None
        wanted: list[tuple[str, _JobState, list[str]]] = []
        # Hosts a better-ranked flight's ready job waits for are left to it.
        reserved = self._reserved()
        for job in list(queue.ready):
            st = state[job]
            if st.status != Status.QUEUED or job in self.tasks:
                queue.discard(job)
                continue
            eligible = st.eligible or []
            if free is None:
                free = self._free_slots()
            if all(n <= 0 for n in free.values()):
                break  # no slot anywhere: the rest waits for the next round
            candidates = [h for h in eligible if free.get(h, 0) > 0 and h not in reserved]
            if not candidates:
                continue
            free[candidates[0]] -= 1  # tentatively: the claim may land on another candidate
            wanted.append((job, st, candidates))
        self._publish_wants(state, queue)
        # All claims of this round go to the writer at once: one group commit.
        claims = await asyncio.gather(*(self._claim(job, c) for job, _, c in wanted))
        for (job, st, _), claim in zip(wanted, claims, strict=True):
            if claim is None:
                continue  # no slot after all (another runner's); retried next round
            self._set_status(state, job, Status.PREPARING)
            if claim == "taken":
                continue  # another runner claimed the job
            assert isinstance(claim, dbh.Claim)
            run = self.runs[job] = JobRun(self.ctx, job, claim, st.runvars, st.deps)
            self.tasks[job] = asyncio.create_task(run.run())
        if wanted:
            self._publish_wants(state, queue)

    def _reserved(self) -> frozenset[str]:
        """The hosts a better-ranked flight of this worker has a ready job waiting for
        (priority, then waiting time, across flights: every worker runs every flight with
        queued jobs, so each sees the better-ranked jobs a host should go to)."""
        if self.shared is None:
            return frozenset()
        out: set[str] = set()
        for f, (rank, hosts) in self.shared.waiting.items():
            if f != self.flight and rank < self.rank:
                out |= hosts
        return frozenset(out)

    def _publish_wants(self, state: dict[str, _JobState], queue: _Queue) -> None:
        """Tell the worker's other flights which hosts this flight's ready jobs wait for."""
        if self.shared is None:
            return
        wants: set[str] = set()
        for job in queue.ready:
            st = state[job]
            if st.status == Status.QUEUED and job not in self.tasks:
                wants.update(st.eligible or ())
        if wants:
            self.shared.waiting[self.flight] = (self.rank, frozenset(wants))
        else:
            self.shared.waiting.pop(self.flight, None)

    async def _claim(self, job: str, hosts: list[str]) -> dbh.Claim | str | None:
        """A slot for the job; "taken" if another runner has the job; None if no slot."""
        until = time.time() + self.loaded.cfg.runner.lease_s
        rid = self.ctx.runner_id

        def claim(conn: Connection) -> dbh.Claim | str | None:
            attempt = dbf.claim_job(conn, self.flight, job, rid, until)
            if attempt is None:
                return "taken"
            got = dbh.claim_slot(
                conn, hosts, self.flight, job, rid, until, attempt=attempt, check=self.check
            )
            if got is None:
                # No rollback inside a group commit: undo the job claim by hand.
                dbf.unclaim_job(conn, self.flight, job, rid)
            return got

        return await self.ctx.write(claim)


def _flags(runvars: dict[str, str]) -> frozenset[str]:
    return frozenset(f for f in runvars.get("all_hostflags", "").split(",") if f)


def run_flight(
    db: Database, loaded: Loaded, flight: int, *, progress: Progress | None = None
) -> tuple[dict[str, str], list[str]]:
    fr = FlightRunner(db, loaded, flight, progress=progress)
    # What is loaded by now (modules, the config, the database's engine) lives as long as
    # the run: the collector need not scan it again at every full collection (it was a
    # tenth of the runner's CPU on a flight of short steps).
    gc.freeze()
    try:
        statuses = asyncio.run(fr.run())
    finally:
        gc.unfreeze()
    return statuses, fr.notes
