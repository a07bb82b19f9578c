"""Progress of a running flight: a live display on a terminal (rich's Live, re-rendered
four times a second: each running job's current step and how long it has run, and the
counts), else one plain line per step start and end; with --quiet, a line when the flight
starts and one when it ends (what the daemon's cycle children print)."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pushgate.config import Loaded
from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.model import FINAL_JOB_STATUSES
from pushgate.redact import inert
from pushgate.run.runner import Progress
from pushgate.run.scheduler import run_flight


class _Tracker:
    """What the display shows: each running job's current step and since when, the counts.

    The callbacks run on the flight's event loop; `render` may run on rich's refresh
    thread, so it reads copies."""

    def __init__(self, total: int = 0, done: dict[str, str] | None = None) -> None:
        self.t0 = time.monotonic()
        self.total = total
        # job -> (host, current step "N testid" or "", when that step or the job started)
        self.running: dict[str, tuple[str, str, float]] = {}
        self.done: dict[str, str] = dict(done or {})

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def job_started(self, job: str, host: str) -> None:
        self.running[job] = (host, "", time.monotonic())

    def step_started(self, job: str, stepno: int, testid: str) -> None:
        host = self.running.get(job, ("", "", 0.0))[0]
        self.running[job] = (host, f"{stepno} {testid}", time.monotonic())

    def step_done(self, job: str, stepno: int, testid: str, status: str) -> None:
        self.finish_step(job, stepno, testid)

    def finish_step(self, job: str, stepno: int, testid: str) -> float | None:
        """Seconds the step ran, when it was seen starting."""
        cur = self.running.get(job)
        if cur is None or cur[1] != f"{stepno} {testid}":
            return None
        self.running[job] = (cur[0], "", time.monotonic())
        return time.monotonic() - cur[2]

    def job_done(self, job: str, status: str) -> None:
        self.running.pop(job, None)
        self.done[job] = status

    def counts(self) -> str:
        done = dict(self.done)
        failed = sum(1 for s in done.values() if s != "pass")
        total = max(self.total, len(done) + len(self.running))
        queued = max(0, total - len(done) - len(self.running))
        return (
            f"running {len(self.running)}  queued {queued}  done {len(done)}/{total}  "
            f"not passed {failed}  elapsed {self.elapsed():.1f}s"
        )

    def render(self) -> Group:
        """Re-read at every refresh, so the clocks tick between events."""
        now = time.monotonic()
        t = Table(box=None, show_header=False, padding=(0, 1))
        for job, (host, step, since) in sorted(dict(self.running).items())[:20]:
            t.add_row(
                Text(job, style="cyan"),
                Text(host),
                Text(step or "(between steps)"),
                Text(f"{now - since:.0f}s", style="dim"),
            )
        return Group(Text(self.counts()), t)


def _flight_start(db: Database, flight: int) -> tuple[str, int, dict[str, str]] | None:
    """The flight's branch, number of jobs and the statuses of those already finished."""
    with db.read() as conn:
        info = dbf.get_flight(conn, flight)
        if info is None:
            return None
        jobs = dbf.get_jobs(conn, flight)
    done = {j.job: j.status for j in jobs if j.status in FINAL_JOB_STATUSES}
    return info.branch, len(jobs), done


def run_with_progress(
    db: Database, loaded: Loaded, flight: int, console: Console, *, quiet: bool = False
) -> tuple[dict[str, str], list[str]]:
    """Run the flight, showing progress on `console`: a live display on a terminal; else
    one plain line per step start and end. Quiet: a line when the flight starts and ends."""
    start = _flight_start(db, flight)
    if start is None:
        return run_flight(db, loaded, flight)  # which says the flight does not exist
    branch, total, done = start
    tr = _Tracker(total, done)

    def line(text: str) -> None:
        console.print(
            f"[{tr.elapsed():7.1f}s] {inert(text, multiline=False)}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def run(progress: Progress | None) -> tuple[dict[str, str], list[str]]:
        line(
            f"flight {flight} ({branch}): started, {total} jobs"
            + (f", {len(done)} already finished" if done else "")
        )
        result = run_flight(db, loaded, flight, progress=progress)
        line(f"flight {flight} ({branch}): {_summary(result[0])}")
        return result

    if quiet:
        return run(None)
    if not console.is_terminal:

        def started(job: str, host: str) -> None:
            tr.job_started(job, host)
            line(f"{job}: started on {host}")

        def step_started(job: str, no: int, testid: str) -> None:
            tr.step_started(job, no, testid)
            line(f"{job}: step {no} {testid} started")

        def step(job: str, no: int, testid: str, status: str) -> None:
            took = tr.finish_step(job, no, testid)
            took_s = "" if took is None else f" ({took:.1f}s)"
            line(f"{job}: step {no} {testid} {status}{took_s}")

        def done_(job: str, status: str) -> None:
            tr.job_done(job, status)
            line(f"{job}: {status}")

        return run(
            Progress(job_started=started, step_started=step_started, step_done=step, job_done=done_)
        )
    # get_renderable: rich re-reads the display at every refresh, so the clocks tick.
    with Live(
        console=console, refresh_per_second=4, transient=True, get_renderable=tr.render
    ) as live:
        result = run_flight(
            db,
            loaded,
            flight,
            progress=Progress(
                job_started=tr.job_started,
                step_started=tr.step_started,
                step_done=tr.step_done,
                job_done=tr.job_done,
            ),
        )
        live.refresh()
    console.print(Text(tr.counts()))
    return result


def _summary(statuses: dict[str, str]) -> str:
    if not statuses:
        return "stopped, no job finished"
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    unfinished = counts.keys() - FINAL_JOB_STATUSES
    head = "stopped" if unfinished else "finished"
    return head + ": " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
