"""`pushgate worker`: run queued jobs of any flight, on any machine sharing the database.

A worker is the scheduler's FlightRunner for every flight with queued jobs, taken in
queue order (priority, then waiting time), in one process with one set of executors,
one group writer and one heartbeat: `flight run N` is the same code with one flight.
Claims are transactions (on PostgreSQL `FOR UPDATE SKIP LOCKED` over host slots, a
conditional update of the job), so any number of workers on any machines share the
work without a broker. Each claim holds a fenced lease (jobs.attempt) that the worker
renews; a worker that vanishes (kill -9, a machine gone) stops renewing, and the
reaper of any other worker takes its jobs over once the lease has run out: the job is
requeued (or `broken` after repeated attempts) and its host is marked for a check.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

from pushgate.config import Loaded
from pushgate.db import farm as dbfarm
from pushgate.db.engine import Database
from pushgate.run.healthcheck import run_checks
from pushgate.run.runner import GroupWriter, Progress
from pushgate.run.scheduler import (
    Executors,
    FlightRunner,
    Shared,
    check_isolation,
    on_stop_signals,
    recover,
    runner_dead,
    runner_id,
    sync_config_hosts,
)

POLL_S = 0.5


def reap(db: Database, me: str, lease_s: float, *, check: bool = False) -> list[str]:
    """The farm's reaper: workers whose lease ran out are recorded lost, and the held
    jobs of every flight whose lease ran out (or whose runner on this machine is dead)
    are taken over and requeued or broken (scheduler.recover, flight by flight)."""
    now = time.time()
    with db.write() as conn:
        lost = dbfarm.mark_lost_workers(conn, now)
    notes = [f"worker {w}: lease ran out; presumed dead" for w in lost]
    with db.read() as conn:
        flights = set(dbfarm.stale_flights(conn, now))
        flights |= {f for r, f in dbfarm.held_runners(conn).items() if r != me and runner_dead(r)}
    for f in sorted(flights):
        notes += [f"flight {f}: {n}" for n in recover(db, f, me, lease_s, check=check)]
    return notes


class Worker:
    def __init__(
        self,
        db: Database,
        loaded: Loaded,
        *,
        name: str | None = None,
        flights: set[int] | None = None,
        say: Callable[[str], None] = lambda line: None,
    ):
        self.db = db
        self.loaded = loaded
        self.id = runner_id(name)
        self.machine = name or socket.gethostname()
        # Only these flights (None: every flight with queued jobs).
        self.only = flights
        self.say = say
        self.notes: list[str] = []
        self.runners: dict[int, asyncio.Task[dict[str, str]]] = {}
        self._runner_notes: dict[int, list[str]] = {}
        self.shared: Shared | None = None

    def _progress(self, flight: int) -> Progress:
        say = self.say
        return Progress(
            job_started=lambda job, host: say(f"{flight}.{job}: started on {host}"),
            job_done=lambda job, status: say(f"{flight}.{job}: {status}"),
        )

    async def run(self, *, once: bool = False) -> list[str]:
        """Work until stopped (SIGINT/SIGTERM: after the current steps); with `once`,
        until no flight has a job queued or held by anyone."""
        rc = self.loaded.cfg.runner
        check_isolation(self.loaded)
        executors = Executors(self.loaded)
        executors.start()
        self.shared = Shared(self.id, executors, asyncio.Event(), GroupWriter(self.db))
        try:
            sync_config_hosts(self.db, self.loaded)
            with self.db.write() as conn:
                dbfarm.register_worker(conn, self.id, self.machine, os.getpid(), rc.lease_s)
        except BaseException:
            await executors.close()
            raise
        self.say(f"worker {self.id} started")
        on_stop_signals(self._on_signal)
        beat = asyncio.create_task(self._beat())
        why = "stopped"
        try:
            await self._loop(once)
            why = "done" if once and not self.shared.stopping.is_set() else "stopped"
        finally:
            beat.cancel()
            for t in self.runners.values():
                t.cancel()
            await executors.close()
            self.shared.writer.close()
            on_stop_signals(None)
            with self.db.write() as conn:
                dbfarm.worker_stopped(conn, self.id, why)
            self.say(f"worker {self.id} {why}")
        return self.notes

    def _on_signal(self) -> None:
        assert self.shared is not None
        if self.shared.stopping.is_set():
            for t in self.runners.values():
                t.cancel()
        self.shared.stopping.set()

    async def _beat(self) -> None:
        """The worker's own lease, and the reaper, every heartbeat."""
        rc = self.loaded.cfg.runner
        assert self.shared is not None
        while True:
            await asyncio.sleep(rc.heartbeat_s)
            try:
                await self.shared.writer.write(
                    lambda conn: dbfarm.worker_beat(conn, self.id, rc.lease_s)
                )
                check = rc.health_check_job is not None
                notes = await asyncio.to_thread(reap, self.db, self.id, rc.lease_s, check=check)
                # Hosts due a health check: their check flights, first in the queue.
                _, checks = await asyncio.to_thread(run_checks, self.db, self.loaded, self.id)
                for n in notes + checks:
                    self.notes.append(n)
                    self.say(n)
            except Exception as e:  # noqa: BLE001 - the next beat tries again
                self.say(f"heartbeat failed: {e}")

    async def _loop(self, once: bool) -> None:
        assert self.shared is not None
        stopping = self.shared.stopping
        while True:
            if not stopping.is_set():
                with self.db.read() as conn:
                    queued = dbfarm.runnable_flights(conn)
                for qf in queued:
                    if qf.flight in self.runners or (
                        self.only is not None and qf.flight not in self.only
                    ):
                        continue
                    fr = FlightRunner(
                        self.db,
                        self.loaded,
                        qf.flight,
                        progress=self._progress(qf.flight),
                        shared=self.shared,
                    )
                    fr.rank = qf.rank
                    self.runners[qf.flight] = asyncio.create_task(fr.run())
                    self._runner_notes[qf.flight] = fr.notes
            if not self.runners:
                if stopping.is_set():
                    return
                if once and not await asyncio.to_thread(self._anything_held):
                    with self.db.read() as conn:
                        if not [
                            f
                            for f in dbfarm.runnable_flights(conn)
                            if self.only is None or f.flight in self.only
                        ]:
                            return
                await asyncio.sleep(POLL_S)
                continue
            done, _ = await asyncio.wait(
                self.runners.values(), timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
            for t in done:
                flight = next(f for f, tk in self.runners.items() if tk is t)
                del self.runners[flight]
                self.notes += [f"flight {flight}: {n}" for n in self._runner_notes.pop(flight)]
                if not t.cancelled() and t.exception() is not None:
                    msg = f"flight {flight}: runner failed: {t.exception()!r}"
                    self.notes.append(msg)
                    self.say(msg)

    def _anything_held(self) -> bool:
        """Whether any unfinished work is held by a runner (a live one, or a dead one
        whose lease the reaper has yet to see run out)."""
        with self.db.read() as conn:
            held = dbfarm.held_runners(conn)
        return bool(held)


def run_worker(
    db: Database,
    loaded: Loaded,
    *,
    name: str | None = None,
    once: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> list[str]:
    return asyncio.run(Worker(db, loaded, name=name, say=say).run(once=once))
