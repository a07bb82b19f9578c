"""`pushgate demo`: a real project, real git history, the whole push gate on this machine.

Three cycles of the `rpn` branch: the good history is tested and pushed (the tested ref
`master` is created); a commit with a real bug breaks the unit tests -> `regressions -
FAIL`, not pushed; the fix -> `all pass`, pushed. Each cycle's report is printed as it
is mailed (to an mbox in the state directory). The regression cycle only opens a
bisection per regression and ends; the bisection loop then searches them (the report
was mailed before), both regressions in one search.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console

from pushgate import config as cfgmod
from pushgate.daemon.cycle import CycleResult, run_cycle
from pushgate.db.engine import Database
from pushgate.demo.bisect import demo_bisect
from pushgate.demo.project import (
    BUGGY,
    FIX,
    SERIES_AFTER,
    SERIES_BEFORE,
    commit,
    make_project,
    write_config,
)
from pushgate.publish.mail.outbox import mail_settings


def _show(console: Console, title: str, res: CycleResult, seconds: float) -> None:
    console.rule(f"{title}: flight {res.flight} ({seconds:.1f} s)")
    if res.report is not None:
        console.print(res.report.mail_text(), highlight=False, markup=False, soft_wrap=True)


def run_demo(directory: Path | None, console: Console, *, quiet: bool = False) -> Path:
    """Make the demo project in `directory` (a new temp dir by default) and run the gate
    over three revisions of it. Returns the demo directory."""
    base = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="pushgate-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()
    console.print(f"demo directory: {base}", highlight=False, soft_wrap=True)
    repo = base / "rpn"
    commits = make_project(repo)
    console.print(
        f"project: {repo} ({len(commits)} commits on staging)", highlight=False, soft_wrap=True
    )
    cfg_path = write_config(base, repo)
    loaded = cfgmod.load(cfg_path)
    db = Database(loaded.database_url)
    db.upgrade()
    steps: list[tuple[str, list[tuple[str, dict[str, str]]]]] = [
        ("1. the good history: tested, pushed to master", []),
        (
            "2. a patch series with a real bug in it: regressions, not pushed",
            [*SERIES_BEFORE, BUGGY, *SERIES_AFTER],
        ),
        ("3. the fix: all pass, pushed", [FIX]),
    ]
    timings = []
    try:
        for title, changes in steps:
            for change in changes:
                msg, files = change
                sha = commit(
                    repo,
                    msg,
                    files,
                    author="Carol Example <carol@example.org>" if change is BUGGY else None,
                )
                console.print(
                    f"committed {sha[:12]} to staging: {msg.splitlines()[0]}", highlight=False
                )
            t0 = time.monotonic()
            res = run_cycle(db, loaded, "rpn")
            timings.append(time.monotonic() - t0)
            _show(console, title, res, timings[-1])
            for note in res.notes:
                console.print(f"  {note}", highlight=False, markup=False)
            if res.bisections:
                demo_bisect(db, loaded, res.flight, console)
    finally:
        db.dispose()
    console.rule("summary")
    console.print(f"cycle wall times: {', '.join(f'{t:.1f} s' for t in timings)}", highlight=False)
    console.print(f"config: {cfg_path}", highlight=False, soft_wrap=True)
    console.print(f"mbox:   {mail_settings(loaded).mbox_path}", highlight=False, soft_wrap=True)
    console.print(f"logs:   {loaded.logs_dir}", highlight=False, soft_wrap=True)
    console.print(f"try:    pushgate -c {cfg_path} report <N>", highlight=False, soft_wrap=True)
    return base
