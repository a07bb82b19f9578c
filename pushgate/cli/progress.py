"""Live progress of a running flight (rich), or plain lines when not on a terminal."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pushgate.config import Loaded
from pushgate.db.engine import Database
from pushgate.run.runner import Progress
from pushgate.run.scheduler import run_flight


class _Tracker:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.running: dict[str, tuple[str, str]] = {}
        self.done: dict[str, str] = {}

    def job_started(self, job: str, host: str) -> None:
        self.running[job] = (host, "")

    def step_done(self, job: str, stepno: int, testid: str, status: str) -> None:
        if job in self.running:
            self.running[job] = (self.running[job][0], f"{stepno} {testid} {status}")

    def job_done(self, job: str, status: str) -> None:
        self.running.pop(job, None)
        self.done[job] = status

    def render(self) -> Group:
        failed = sum(1 for s in self.done.values() if s != "pass")
        head = Text(
            f"running {len(self.running)}  done {len(self.done)}  not passed {failed}  "
            f"elapsed {time.monotonic() - self.t0:.1f}s"
        )
        t = Table(box=None, show_header=False, padding=(0, 1))
        for job, (host, last) in sorted(self.running.items())[:20]:
            t.add_row(Text(job, style="cyan"), host, last)
        return Group(head, t)


def run_with_progress(
    db: Database, loaded: Loaded, flight: int, console: Console, *, quiet: bool = False
) -> tuple[dict[str, str], list[str]]:
    tr = _Tracker()
    if quiet:
        return run_flight(db, loaded, flight)
    if not console.is_terminal:

        def done(job: str, status: str) -> None:
            tr.job_done(job, status)
            console.print(
                f"[{time.monotonic() - tr.t0:7.1f}s] {job}: {status}", highlight=False, markup=False
            )

        return run_flight(
            db,
            loaded,
            flight,
            progress=Progress(job_started=tr.job_started, step_done=tr.step_done, job_done=done),
        )
    with Live(tr.render(), console=console, refresh_per_second=4, transient=True) as live:

        def refresh() -> None:
            live.update(tr.render())

        def started(job: str, host: str) -> None:
            tr.job_started(job, host)
            refresh()

        def step(job: str, no: int, testid: str, status: str) -> None:
            tr.step_done(job, no, testid, status)
            refresh()

        def done(job: str, status: str) -> None:
            tr.job_done(job, status)
            refresh()

        result = run_flight(
            db,
            loaded,
            flight,
            progress=Progress(job_started=started, step_done=step, job_done=done),
        )
    console.print(tr.render().renderables[0])
    return result
