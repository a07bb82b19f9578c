"""Run one job: checkouts, steps in order, statuses, logs, outputs, artifacts.

Each step's row is committed as `running` before its command starts and its
result is committed before the next step starts (invariant 3), so a runner
that dies leaves a job that the next `flight run` can requeue or break.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection

from pushgate.config import JobConfig, Loaded, StepConfig
from pushgate.db import farm as dbfarm
from pushgate.db import flights as dbf
from pushgate.db import hosthealth
from pushgate.db import hosts as dbh
from pushgate.db.engine import Database
from pushgate.git import GitError
from pushgate.model import Status, job_rollup
from pushgate.paths import (
    attempt_artifacts,
    attempt_dirs,
    job_artifacts,
    job_log_dir,
    job_tmpdir,
    job_workdir,
    log_relpath,
    mirror,
)
from pushgate.run import isolation
from pushgate.run.executors.base import (
    Executor,
    JobFiles,
    Sandbox,
    StepOutcome,
    StepRun,
    stamp,
)

BUILD_CHECK = "build-check(1)"
T = TypeVar("T")
log = logging.getLogger(__name__)


class Interrupted(Exception):
    """The runner was asked to stop; the job goes back to the queue."""


@dataclass
class Progress:
    """Callbacks the CLI uses for live progress; all optional."""

    job_started: Callable[[str, str], None] = lambda job, host: None
    # Called when a step's command is about to run (its `running` row committed).
    step_started: Callable[[str, int, str], None] = lambda job, no, testid: None
    step_done: Callable[[str, int, str, str], None] = lambda job, no, testid, status: None
    job_done: Callable[[str, str], None] = lambda job, status: None


@dataclass
class RunContext:
    db: Database
    loaded: Loaded
    runner_id: str
    executor: Executor
    branch: str
    flight: int
    progress: Progress = field(default_factory=Progress)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    writer: GroupWriter | None = None
    # Whether this runner already moved the flight from constructing to running.
    flight_running: bool = False
    # The runner's environment, read once: os.environ decodes every entry anew.
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    # Why the runner stopped taking work: a disk for logs or artifacts is full.
    fault: str | None = None
    # The executor of a host (local or ssh, by the host's config); None: `executor` for all.
    executor_for: Callable[[str], Executor] | None = None

    def executor_of(self, host: str) -> Executor:
        return self.executor if self.executor_for is None else self.executor_for(host)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run fn in a write transaction, committed before this returns; fn's result."""
        if self.writer is None:
            self.writer = GroupWriter(self.db)
        return await self.writer.write(fn)


class GroupWriter:
    """Group commit for the runner's step and job transactions.

    Writes asked for during one turn of the event loop are committed together
    in one transaction at the end of that turn: each caller still waits for
    its own commit (invariant 3), but eight jobs finishing steps at once pay
    for one commit, not eight. The commit runs on the loop itself: a DB thread
    was measured slower, as it and the loop fought over the GIL (a commit of a
    few rows took 3 ms, a write waited 9 ms for it).
    """

    def __init__(self, db: Database):
        self.db = db
        self.queue: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        # One connection for the runner's life: a pool checkout per commit costs
        # more than the commit (measured 0.15 vs 0.06 ms for an empty one).
        self.conn: Connection | None = None

    async def write(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if not self.queue:
            loop.call_soon(self._flush)
        self.queue.append((fn, fut))
        return await fut

    def _commit(self, fns: list[Callable[[Connection], Any]]) -> list[Any]:
        if self.conn is None:
            self.conn = self.db.write_connection()
        try:
            with self.db.driver_transaction(self.conn) as conn:
                return [fn(conn) for fn in fns]
        except Exception:
            # The connection may be what failed (a restarted server): take a fresh one.
            self.close()
            raise

    def _flush(self) -> None:
        batch, self.queue = self.queue, []
        results: list[tuple[Any, BaseException | None]]
        try:
            results = [(v, None) for v in self._commit([f for f, _ in batch])]
        except Exception:  # noqa: BLE001 - retried one by one to find the culprit
            results = []
            for fn, _ in batch:
                try:
                    [v] = self._commit([fn])
                    results.append((v, None))
                except Exception as e:  # noqa: BLE001 - handed to that caller
                    results.append((None, e))
        for (_, fut), (value, err) in zip(batch, results, strict=True):
            if fut.done():
                continue  # its caller was cancelled meanwhile; the write stands
            if err is None:
                fut.set_result(value)
            else:
                fut.set_exception(err)

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection is dropped either way
                pass


def no_space(e: BaseException) -> bool:
    """Whether an error is a full disk (or quota) where logs or artifacts are written."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(ctx: RunContext, what: str, e: OSError) -> str:
    """A full disk is a fault, not a crash: the reason for the step it broke (returned).
    The runner starts no new step or job, as on a first signal (the jobs not finished
    go back to the queue: the flight resumes when there is space), and says so once."""
    where = f" ({e.filename})" if e.filename else ""
    reason = f"no space left for {what}: {e.strerror}{where}"
    if ctx.fault is None:
        ctx.fault = reason
        log.warning(
            "flight %s: %s; stopping (the flight resumes when there is space)", ctx.flight, reason
        )
    ctx.stopping.set()
    return reason


def _write_log(ctx: RunContext, path: Path, text: str) -> None:
    """A log pushgate writes itself; on a full disk the step is recorded without it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as e:
        if not no_space(e):
            raise
        disk_full(ctx, "logs", e)


def command_argv(step: StepConfig) -> list[str]:
    # A string is the config author's own shell text; untrusted values reach it
    # only through the environment, never by substitution.
    return ["/bin/sh", "-c", step.command] if isinstance(step.command, str) else list(step.command)


async def _record_only_step(ctx: RunContext, job: str, testid: str, status: str, why: str) -> None:
    """A job that ends before running anything: one finished step with the reason, logged."""
    rel = log_relpath(ctx.flight, job, 1, testid)
    _write_log(ctx, ctx.loaded.logs_dir / rel, f"{stamp()} [pushgate] {why}\n")
    now = time.time()

    def record(conn: Connection) -> None:
        # Only while the job is queued, and by one runner: another may have settled or
        # claimed it meanwhile.
        if dbf.settle_queued_job(conn, ctx.flight, job, status):
            dbf.start_step(
                conn, ctx.flight, job, 1, testid, True, rel, status=status, finish=now, reason=why
            )

    await ctx.write(record)
    ctx.progress.step_done(job, 1, testid, status)
    ctx.progress.job_done(job, status)


async def block_job(ctx: RunContext, job: str, status: str, why: str) -> None:
    """A job whose buildjob did not pass: build-check(1) blocked (or starved), nothing run."""
    await _record_only_step(ctx, job, BUILD_CHECK, status, why)


async def starve_job(ctx: RunContext, job: str, why: str) -> None:
    """No host can ever run the job: hosts-allocate starved."""
    await _record_only_step(ctx, job, "hosts-allocate", Status.STARVED, why)


class JobRun:
    """One attempt at one job on one claimed slot."""

    def __init__(
        self,
        ctx: RunContext,
        job: str,
        claim: dbh.Claim,
        runvars: dict[str, str],
        deps: list[tuple[str, int, str]],
    ):
        self.ctx = ctx
        self.job = job
        self.cfg: JobConfig = ctx.loaded.jobs[job]
        self.claim = claim
        self.runvars = runvars
        self.deps = deps
        self.stepno = 0
        # The fencing token: every write for the job names it (invariant 8). The job's
        # dirs are this attempt's own; its artifacts are published by its last write.
        self.attempt = claim.attempt
        self.workdir = job_workdir(ctx.loaded, ctx.flight, job, self.attempt)
        self.artifacts = attempt_artifacts(ctx.loaded, ctx.flight, job, self.attempt)
        # Until when (monotonic) the lease surely holds without asking: a step does not
        # start past it before the lease is renewed (a runner stopped, then resumed).
        self.lease_deadline = time.monotonic() + ctx.loaded.cfg.runner.lease_s / 2
        # Set when the lease was found lost: the job is no longer ours.
        self.lost = False
        self.tmpdir = job_tmpdir(ctx.loaded, ctx.flight, job, self.attempt)
        self.sandbox: Sandbox | None = None
        # The last step's log: where artifact collection says what it refused.
        self.last_log: str | None = None
        self.checkouts: dict[str, Path] = {}
        self.results: list[tuple[str, bool]] = []
        # Writes not yet committed: they go with the next transaction, which always
        # comes before the next command runs (invariant 3).
        self.pending: list[Callable[[Connection], None]] = []
        self._job_env: dict[str, str] | None = None
        # A step of the job was broken by a full disk: it runs no more steps.
        self.full_disk = False
        # The job's files, for an executor that runs its steps on another machine.
        self.files: JobFiles | None = None
        # (kind, why) of the host's failure that broke the job ("lost" or "bad", see
        # StepOutcome.host_fault): it runs no more steps here and may run on another host.
        self.host_fault: tuple[str, str] | None = None
        # Set when the job went back to the queue to run on another host.
        self.rerun = False

    async def run(self) -> str:
        ctx = self.ctx
        ctx.progress.job_started(self.job, self.claim.host)

        def begin(conn: Connection) -> None:
            # Fenced first: nothing else of the transaction stands if the job changed hands.
            dbf.set_job_status(conn, ctx.flight, self.job, Status.RUNNING, attempt=self.attempt)
            if not ctx.flight_running:
                dbf.set_flight_running(conn, ctx.flight)
                ctx.flight_running = True
            if not isolation.isolated(ctx.loaded):
                # Recorded before any step runs: the flight's reports say `steps not isolated`.
                dbf.set_runvars(
                    conn,
                    ctx.flight,
                    self.job,
                    {isolation.NOT_ISOLATED_RUNVAR: isolation.NOT_ISOLATED_VALUE},
                )
            if self.deps:
                # Prerequisites were checked by the scheduler before it claimed a host.
                dbf.start_step(
                    conn,
                    ctx.flight,
                    self.job,
                    1,
                    BUILD_CHECK,
                    True,
                    None,
                    status=Status.PASS,
                    finish=time.time(),
                    attempt=self.attempt,
                )

        if self.deps:
            self.stepno = 1
        self.pending.append(begin)
        try:
            if await self._prepare():
                try:
                    await self._steps()
                finally:
                    # Whatever a step left running goes before its files are collected.
                    if self.sandbox is not None:
                        await ctx.executor_of(self.claim.host).release(self.sandbox)
                    if self.files is not None:
                        await self._fetch_files()
            # A thread hop only when there is file work to do.
            kept = await self._artifacts() if self.cfg.artifacts else []
        finally:
            if self.checkouts:
                await asyncio.to_thread(self._cleanup_checkouts)
            await self._cleanup_tmpdir()
        status = job_rollup(self.results)
        outputs = {"host": self.claim.host}
        for tree, _ in self.checkouts.items():
            outputs[f"built_revision_{tree}"] = self.runvars[f"revision_{tree}"]
        if kept:
            outputs["artifacts"] = ",".join(kept)

        def end(conn: Connection) -> None:
            if self.host_fault is not None and self._host_broke(conn):
                return  # back to the queue, for another host
            if status == Status.PASS and self.job == ctx.loaded.cfg.runner.health_check_job:
                hosthealth.health_check_passed(conn, self.claim.host, self.job, ctx.runner_id)
            elif self.runvars.get("check_host") == self.claim.host:
                # The host's health check did not pass: bad, until a person says otherwise.
                hosthealth.check_failed(conn, self.claim.host, ctx.flight, status, ctx.runner_id)
            # Fenced first (LeaseLost rolls the rest back): on PostgreSQL the job's row
            # stays locked to the commit, so no take-over comes between.
            dbf.set_job_status(conn, ctx.flight, self.job, status, final=True, attempt=self.attempt)
            self.flush(conn)
            dbf.set_runvars(conn, ctx.flight, self.job, outputs)
            dbh.release_slot(conn, self.claim, ctx.flight, self.job)
            self._publish_artifacts()

        await ctx.write(end)
        if self.rerun:
            return Status.QUEUED
        ctx.progress.job_done(self.job, status)
        return status

    async def _fetch_files(self) -> None:
        """What the job keeps comes back from its remote host (a failure breaks the job)."""
        assert self.files is not None
        why = await self.ctx.executor_of(self.claim.host).job_done(self.files)
        if why is not None:
            await self._harness_step("artifacts", Status.BROKEN, why)
            self.host_fault = self.host_fault or ("lost", why)

    def _host_broke(self, conn: Connection) -> bool:
        """The job's host broke it: recorded against the host (bad at once if its key
        changed, or after runner.host_bad_after broken jobs in a row). True when the job
        goes back to the queue to run on another host (fenced; its steps are dropped),
        False when it ends here, broken (no retries left, or no other host)."""
        ctx, rc = self.ctx, self.ctx.loaded.cfg.runner
        assert self.host_fault is not None
        kind, why = self.host_fault
        host = self.claim.host
        hosthealth.record_break(
            conn,
            host,
            ctx.flight,
            self.job,
            self.attempt,
            why,
            ctx.runner_id,
            bad_after=rc.host_bad_after,
            bad_now=kind == "bad",
        )
        flags = frozenset(f for f in self.runvars.get("all_hostflags", "").split(",") if f)
        pinned = dbfarm.pinned_host(self.runvars) is not None
        if not hosthealth.rerun_possible(
            conn, ctx.flight, self.job, flags, rc.host_retries, pinned=pinned
        ):
            return False
        dbh.release_slot(conn, self.claim, ctx.flight, self.job)
        if not dbf.requeue_job(conn, ctx.flight, self.job, self.attempt):
            raise dbf.LeaseLost(f"{ctx.flight}.{self.job}: attempt {self.attempt} was taken over")
        self.pending.clear()
        self.rerun = True
        log.info(
            "%s.%s: host %s broke it (%s); rerun on another host", ctx.flight, self.job, host, why
        )
        return True

    def _new_dirs(self) -> bool:
        """Make the job's work, artifact, log and temporary dirs; False if one was there
        already.

        mkdir first, not a stat and then mkdir: a first attempt, the usual
        case, costs one system call a dir once the flight's parents exist.
        """
        logs = job_log_dir(self.ctx.loaded, self.ctx.flight, self.job)
        dirs = (
            (self.workdir, True),
            (self.artifacts, True),
            (logs, False),
            (self.tmpdir, True),
        )
        for d, fresh in dirs:
            try:
                os.mkdir(d)
            except FileNotFoundError:
                os.makedirs(d, exist_ok=not fresh)
            except FileExistsError:
                if fresh:
                    return False
        return True

    def _fresh_dirs(self) -> None:
        """For a rerun: the last attempt's files go, the dirs are made anew."""
        for d in (self.workdir, self.artifacts, self.tmpdir):
            if d.exists():
                shutil.rmtree(d)
        if not self._new_dirs():
            raise FileExistsError(f"{self.workdir} or {self.artifacts} came back while removed")

    def _publish_artifacts(self) -> None:
        """Move this attempt's artifacts to the job's place, inside the fenced transaction
        that ends the job (so only the attempt holding it does). Idempotent: a group
        commit that failed for another write runs this again alone."""
        final = job_artifacts(self.ctx.loaded, self.ctx.flight, self.job)
        try:
            os.rename(self.artifacts, final)
        except FileNotFoundError:
            return  # moved already
        except OSError:
            # Left by an attempt whose last transaction did not commit: replaced.
            aside = final.with_name(f".{self.job}@replaced-{self.attempt}")
            os.rename(final, aside)
            os.rename(self.artifacts, final)
            shutil.rmtree(aside, ignore_errors=True)

    def remove_own_dirs(self) -> None:
        """After the lease was lost: this attempt's work and artifact dirs go (the new
        attempt's are its own, and left alone)."""
        for d in (self.workdir, self.artifacts):
            shutil.rmtree(d, ignore_errors=True)

    def _clear_other_attempts(self) -> None:
        """Remove the dirs of earlier attempts of the job (fenced out: theirs no more)."""
        for d in attempt_dirs(self.ctx.loaded, self.ctx.flight, self.job):
            if d not in (self.workdir, self.artifacts):
                shutil.rmtree(d, ignore_errors=True)

    async def _prepare(self) -> bool:
        """Fresh work and artifact dirs, and a checkout of each tree the job uses."""
        ctx = self.ctx
        if self.attempt > 1:
            # The job was claimed before: earlier attempts' dirs go, off the loop.
            await asyncio.to_thread(self._clear_other_attempts)
        # On the loop: a worker thread waited for the GIL longer than the mkdirs
        # take while the loop is busy (a job's start to its first step: 3.7 ms
        # through a thread, 1.6 ms inline, measured on a sleep flight).
        if not self._new_dirs():
            # A rerun: removing the last attempt's files may take long, so off the loop.
            await asyncio.to_thread(self._fresh_dirs)
        trees = ctx.loaded.job_trees(ctx.branch, self.job)
        if not trees:
            return True
        try:
            for t in trees:
                dest = self.workdir / t
                await asyncio.to_thread(
                    mirror(ctx.loaded, t).worktree, self.runvars[f"revision_{t}"], dest
                )
                self.checkouts[t] = dest
        except (GitError, OSError) as e:
            await self._harness_step("checkout", Status.BROKEN, f"checkout failed: {e}")
            return False
        return True

    def _make_sandbox(self) -> Sandbox:
        ctx = self.ctx
        deps = [str(job_artifacts(ctx.loaded, f, j)) for _, f, j in self.deps]
        return isolation.job_sandbox(
            ctx.loaded,
            key=f"{ctx.flight}/{self.job}/{id(self)}",
            writable=[str(self.workdir), str(self.artifacts), str(self.tmpdir)],
            # A buildjob's artifacts are read-only; one whose dir has gone has none.
            readonly=[d for d in dict.fromkeys(deps) if os.path.isdir(d)],
            network=self.cfg.network,
        )

    async def _cleanup_tmpdir(self) -> None:
        """The job's HOME and TMPDIR go when it ends (at once when empty)."""
        try:
            os.rmdir(self.tmpdir)
        except FileNotFoundError:
            pass
        except OSError:
            await asyncio.to_thread(shutil.rmtree, self.tmpdir, True)

    async def _harness_step(self, testid: str, status: str, message: str) -> None:
        self.stepno += 1
        rel = log_relpath(self.ctx.flight, self.job, self.stepno, testid)
        _write_log(self.ctx, self.ctx.loaded.logs_dir / rel, f"{stamp()} [pushgate] {message}\n")
        stepno, now = self.stepno, time.time()

        def record(conn: Connection) -> None:
            dbf.start_step(
                conn,
                self.ctx.flight,
                self.job,
                stepno,
                testid,
                True,
                rel,
                status=status,
                finish=now,
                reason=message,
                attempt=self.attempt,
            )

        self.pending.append(record)
        self.results.append((status, True))

    def env(self, step: StepConfig, stepno: int) -> dict[str, str]:
        if self._job_env is None:
            self._job_env = self._make_job_env()
        env = self._job_env.copy()
        env["PUSHGATE_STEPNO"] = str(stepno)
        env["PUSHGATE_TESTID"] = step.testid
        return env

    def _make_job_env(self) -> dict[str, str]:
        """What every step of the job has in its environment (built once a job): an
        allow-list (isolation.step_env_base), never pushgate's own environment."""
        ctx = self.ctx
        env = isolation.step_env_base(ctx.base_env)
        # One dir for both: each dir made and removed a job costs ~0.1 ms on ext4.
        env["HOME"] = env["TMPDIR"] = str(self.tmpdir)
        for name, value in self.runvars.items():
            if name.isidentifier():
                env[name] = value
        host = ctx.loaded.cfg.hosts.get(self.claim.host)
        if host is not None:
            env.update(host.env)
        env.update(self.cfg.env)
        env.update(
            {
                "PUSHGATE_FLIGHT": str(ctx.flight),
                "PUSHGATE_BRANCH": ctx.branch,
                "PUSHGATE_JOB": self.job,
                "PUSHGATE_HOST": self.claim.host,
                # Lets a later run find and kill this step's processes if we die.
                "PUSHGATE_RUNNER": ctx.runner_id,
                "PUSHGATE_ATTEMPT": str(self.attempt),
                "PUSHGATE_WORKDIR": str(self.workdir),
                "PUSHGATE_ARTIFACTS": str(self.artifacts),
            }
        )
        for tree, path in self.checkouts.items():
            env[f"PUSHGATE_SRC_{tree.upper().replace('-', '_')}"] = str(path)
        for t in ctx.loaded.branch_trees(ctx.branch):
            rev = self.runvars.get(f"revision_{t}")
            if rev:
                env[f"PUSHGATE_REVISION_{t.upper().replace('-', '_')}"] = rev
        for var, dflight, djob in self.deps:
            arts = str(job_artifacts(ctx.loaded, dflight, djob))
            env[f"PUSHGATE_{var.upper()}_ARTIFACTS"] = arts
            if var == "buildjob" or "PUSHGATE_BUILD_ARTIFACTS" not in env:
                env["PUSHGATE_BUILD_ARTIFACTS"] = arts
        return env

    async def _steps(self) -> None:
        ctx = self.ctx
        failed = False
        for step in self.cfg.steps:
            if failed and not step.always:
                continue  # osstest: steps after a fatal failure get no row at all
            if ctx.stopping.is_set():
                raise Interrupted()
            self.stepno += 1
            stepno = self.stepno
            rel = log_relpath(ctx.flight, self.job, stepno, step.testid)

            # The previous step's result commits in the same transaction that
            # starts this one: still before this step's command runs (invariant 3).
            def begin(
                conn: Connection, stepno: int = stepno, step: StepConfig = step, rel: str = rel
            ) -> None:
                # Fenced (LeaseLost if the job changed hands), in the insert's own WHERE.
                dbf.start_step(
                    conn,
                    ctx.flight,
                    self.job,
                    stepno,
                    step.testid,
                    step.fatal,
                    rel,
                    attempt=self.attempt,
                )
                self.flush(conn)

            await ctx.write(begin)
            if time.monotonic() > self.lease_deadline:
                # The lease may have run out unseen (the runner was stopped): renew it,
                # or learn it was lost, before the command runs.
                await ctx.write(self.renew)
            ctx.progress.step_started(self.job, stepno, step.testid)
            # A plain string: a Path per step cost more than the rest of this loop.
            outcome = await self._run_step(step, stepno, f"{ctx.loaded.logs_dir}/{rel}")
            status, reason = self._status(outcome, step)
            self.pending.append(self._finisher(stepno, status, reason))
            ctx.progress.step_done(self.job, stepno, step.testid, status)
            self.results.append((status, step.fatal))
            if status != Status.PASS and step.fatal:
                failed = True
            if self.full_disk:
                break  # the job ends here, broken (not requeued: the reason stands)
            if self.host_fault is not None:
                break  # the host failed: nothing more runs on it

    def _finisher(
        self, stepno: int, status: str, reason: str | None
    ) -> Callable[[Connection], None]:
        def finish(conn: Connection) -> None:
            dbf.finish_step(
                conn, self.ctx.flight, self.job, stepno, status, reason, attempt=self.attempt
            )

        return finish

    def renew(self, conn: Connection) -> None:
        """Extend the job's and its slot's leases; LeaseLost if either changed hands."""
        started = time.monotonic()
        rc = self.ctx.loaded.cfg.runner
        until = time.time() + rc.lease_s
        flight, job = self.ctx.flight, self.job
        if not dbf.renew_lease(conn, flight, job, self.attempt, until) or not dbh.renew_slot(
            conn, self.claim, flight, job, until
        ):
            self.lost = True
            raise dbf.LeaseLost(f"{flight}.{job}: attempt {self.attempt} was taken over")
        self.lease_deadline = started + rc.lease_s / 2

    def flush(self, conn: Connection) -> None:
        """Commit step results not yet written (with the caller's transaction)."""
        for write in self.pending:
            write(conn)
        self.pending.clear()

    async def _run_step(self, step: StepConfig, stepno: int, log: str) -> StepOutcome:
        ctx = self.ctx
        cwd = self.checkouts.get(step.cwd, self.workdir) if step.cwd else self.workdir

        if self.sandbox is None and isolation.isolated(ctx.loaded):
            self.sandbox = self._make_sandbox()
        self.last_log = log
        req = StepRun(
            argv=command_argv(step),
            env=self.env(step, stepno),
            cwd=cwd,
            log=log,
            timeout=step.timeout,
            sandbox=self.sandbox,
            files=self._job_files(),
            log_max_bytes=ctx.loaded.cfg.runner.log_max_bytes,
        )
        try:
            return await ctx.executor_of(self.claim.host).run(req)
        except (OSError, RuntimeError) as e:
            if no_space(e):
                assert isinstance(e, OSError)
                self.full_disk = True
                return StepOutcome(None, error=disk_full(ctx, "the step's log", e))
            return StepOutcome(None, error=f"executor failed: {e}")

    def _job_files(self) -> JobFiles:
        if self.files is None:
            ctx = self.ctx
            self.files = JobFiles(
                key=f"{ctx.flight}/{self.job}@{self.attempt}",
                workdir=str(self.workdir),
                artifacts=str(self.artifacts),
                tmpdir=str(self.tmpdir),
                inputs=tuple(
                    dict.fromkeys(str(job_artifacts(ctx.loaded, f, j)) for _, f, j in self.deps)
                ),
                keep=tuple(self.cfg.artifacts),
            )
        return self.files

    def _status(self, outcome: StepOutcome, step: StepConfig) -> tuple[str, str | None]:
        if outcome.host_fault:
            self.host_fault = (outcome.host_fault, outcome.error or "the host failed")
        if outcome.error:
            return Status.BROKEN, outcome.error
        if outcome.timed_out:
            return step.iffail, f"timed out after {step.timeout:g}s"
        if outcome.exit_code == 0:
            return Status.PASS, None
        if outcome.exit_code == self.ctx.loaded.cfg.runner.broken_exit_code:
            return Status.BROKEN, f"exit status {outcome.exit_code}"
        return step.iffail, f"exit status {outcome.exit_code}"

    async def _artifacts(self) -> list[str]:
        """Keep the declared artifacts. A full disk makes a broken `artifacts` step with
        the reason, and what was copied goes (a broken job's artifacts serve nobody)."""
        try:
            return await asyncio.to_thread(self._keep_artifacts)
        except OSError as e:
            if not no_space(e):
                raise
            await asyncio.to_thread(shutil.rmtree, self.artifacts, True)
            why = disk_full(self.ctx, "artifacts", e)
            await self._harness_step("artifacts", Status.BROKEN, why)
            return []

    def _keep_artifacts(self) -> list[str]:
        """Copy declared paths (globs relative to the work dir) into the artifact store.

        Nothing is read through a symbolic link that leads out of the work dir (the
        code under test made the links): a link that stays inside is kept as a link,
        one that leads out is refused with a line in the last step's log.
        """
        kept = []
        root = os.path.realpath(self.workdir)
        refused: list[str] = []

        def inside(path: str) -> bool:
            real = os.path.realpath(path)
            return real == root or real.startswith(root + os.sep)

        def outward_links(d: str, names: list[str]) -> set[str]:
            out = {n for n in names if os.path.islink(os.path.join(d, n))}
            out = {n for n in out if not inside(os.path.join(d, n))}
            refused.extend(os.path.relpath(os.path.join(d, n), self.workdir) for n in out)
            return out

        for pattern in self.cfg.artifacts:
            for src in sorted(glob.glob(str(self.workdir / pattern), recursive=True)):
                rel = os.path.relpath(src, self.workdir)
                if rel.startswith("..") or rel in kept:
                    continue
                # glob follows links to dirs: what it found there is not the work dir's.
                if not inside(os.path.dirname(src)) or (os.path.islink(src) and not inside(src)):
                    refused.append(rel)
                    continue
                dest = self.artifacts / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if os.path.islink(src):
                    if os.path.lexists(dest):
                        os.unlink(dest)
                    os.symlink(os.readlink(src), dest)
                elif os.path.isdir(src):
                    shutil.copytree(
                        src, dest, symlinks=True, ignore=outward_links, dirs_exist_ok=True
                    )
                else:
                    shutil.copy2(src, dest, follow_symlinks=False)
                kept.append(rel)
        if refused and self.last_log:
            with open(self.last_log, "a") as log:
                for rel in dict.fromkeys(refused):
                    log.write(
                        f"{stamp()} [pushgate] artifact {rel!r} not kept: a symbolic link "
                        "out of the work dir, or found through one\n"
                    )
        return kept

    def _cleanup_checkouts(self) -> None:
        for tree, dest in self.checkouts.items():
            try:
                mirror(self.ctx.loaded, tree).remove_worktree(dest)
            except (GitError, OSError):
                pass
