"""The demo's bisection: the regression cycle only opened bisections and mailed its report;
now the bisection loop searches them (as `pushgate daemon` or `pushgate bisect run` would),
and the demo shows that the report went out first and that the regressions of one flight
cost one search (spec/flake-aware-bisection.md; osstest's `cr-try-bisect`)."""

from __future__ import annotations

import mailbox
import time
from datetime import datetime

from rich.console import Console

from pushgate.bisect.loop import run_open
from pushgate.bisect.runner import BisectResult
from pushgate.config import Loaded
from pushgate.db import flights as dbf
from pushgate.db import mailqueue as dbm
from pushgate.db.engine import Database
from pushgate.publish.mail.outbox import mail_settings


def _print(console: Console, text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _clock(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3] if t else "never"


def demo_bisect(db: Database, loaded: Loaded, flight: int | None, console: Console) -> int:
    """Search the bisections open for `flight`'s regressions; print each outcome, the
    mail order and the flights they cost. Returns the number of culprits found."""
    if flight is None:
        return 0
    t0 = time.monotonic()
    results = run_open(db, loaded, say=lambda line: _print(console, f"  {line}"))
    console.rule(f"bisection of flight {flight}'s regressions ({time.monotonic() - t0:.1f} s)")
    found = 0
    for res in results:
        _print(console, res.body)
        if res.culprit_commit:
            found += 1
            _print(
                console,
                f"culprit of {res.job} {res.testid}: {res.culprit_tree} {res.culprit_commit}"
                f" ({len(res.probe_flights)} flights, P={res.confidence:.4f})",
            )
        else:
            _print(console, f"{res.job} {res.testid}: {res.outcome}")
    if not results:
        console.print("no regression to bisect", highlight=False)
        return 0
    _cost(console, flight, results)
    _mailed_first(db, loaded, flight, results, console)
    return found


def _cost(console: Console, flight: int, results: list[BisectResult]) -> None:
    """One search for the regressions of one flight: the later bisections conclude from
    the probe flights of the first (which ran every job concerned)."""
    seen: set[int] = set()
    lines = []
    for r in results:
        new = [f for f in r.probe_flights if f not in seen]
        seen.update(r.probe_flights)
        lines.append(
            f"  bisection {r.id} ({r.job} {r.testid}): {len(r.probe_flights)} probe flights"
            f" as evidence, {len(new)} of them its own"
        )
    first = len(results[0].probe_flights)
    _print(
        console,
        f"{len(results)} regressions of flight {flight}: {len(seen)} probe flights in all,"
        f" against {first} for one job searched alone"
        f" ({len(seen) / max(first, 1):.2f} x; searched one after the other: about"
        f" {len(results) * first})",
    )
    for line in lines:
        _print(console, line)


def _mailed_first(
    db: Database, loaded: Loaded, flight: int, results: list[BisectResult], console: Console
) -> None:
    """When the regression report was mailed, against when the first probe flight started,
    and the order of the messages in the mbox."""
    with db.read() as conn:
        report = [m for m in dbm.list_mail(conn, flight) if m.kind == "report"]
        probes = [dbf.get_flight(conn, f) for r in results for f in r.probe_flights]
    sent = min((m.sent for m in report if m.sent), default=None)
    started = min((p.started for p in probes if p is not None and p.started), default=None)
    first = sent is not None and (started is None or sent < started)
    _print(
        console,
        f"report of flight {flight} mailed at {_clock(sent)}; the bisection's first probe"
        f" flight started at {_clock(started)}: "
        + ("the report went out before the bisection started" if first else "NOT mailed first"),
    )
    path = mail_settings(loaded).mbox_path
    if path:
        subjects = [str(m["Subject"]) for m in mailbox.mbox(path)]
        _print(console, "mbox, in order: " + " | ".join(subjects[-1 - len(results) :]))
