"""The demo's bisection: after the regression flight, bisect each regression it reported
and print the culprit (spec/flake-aware-bisection.md; osstest's `cr-try-bisect`)."""

from __future__ import annotations

import time

from rich.console import Console

from pushgate.bisect.runner import start_for_regressions
from pushgate.config import Loaded
from pushgate.db.engine import Database


def demo_bisect(db: Database, loaded: Loaded, flight: int | None, console: Console) -> int:
    """Bisect the regressions of `flight`; print each outcome. Returns the number of culprits
    found."""
    if flight is None:
        return 0
    t0 = time.monotonic()
    results = start_for_regressions(
        db,
        loaded,
        flight,
        say=lambda line: console.print(f"  {line}", highlight=False, markup=False),
    )
    console.rule(f"bisection of flight {flight}'s regressions ({time.monotonic() - t0:.1f} s)")
    found = 0
    for res in results:
        console.print(res.body, highlight=False, markup=False, soft_wrap=True)
        if res.culprit_commit:
            found += 1
            console.print(
                f"culprit of {res.job} {res.testid}: {res.culprit_tree} "
                f"{res.culprit_commit} ({len(res.probe_flights)} flights,"
                f" P={res.confidence:.4f})",
                highlight=False,
                markup=False,
            )
        else:
            console.print(f"{res.job} {res.testid}: {res.outcome}", highlight=False, markup=False)
    if not results:
        console.print("no regression to bisect", highlight=False)
    return found
