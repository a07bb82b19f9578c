"""`pushgate demo`: a real project, real git history, real flights on this machine."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from pushgate import config as cfgmod
from pushgate.db.engine import Database
from pushgate.demo.project import make_project, write_config
from pushgate.flights import new_flight
from pushgate.progress import run_with_progress
from pushgate.report.grid import render_grid


def run_demo(directory: Path | None, console: Console, *, quiet: bool = False) -> Path:
    """Make the demo project in `directory` (a new temp dir by default) and run a flight."""
    base = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="pushgate-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()
    console.print(f"demo directory: {base}", highlight=False)
    repo = base / "rpn"
    commits = make_project(repo)
    console.print(f"project: {repo} ({len(commits)} commits on staging)", highlight=False)
    cfg_path = write_config(base, repo)
    loaded = cfgmod.load(cfg_path)
    db = Database(loaded.database_url)
    db.upgrade()
    flight = new_flight(db, loaded, "rpn")
    console.print(f"flight {flight}: testing rpn staging {commits[-1][:12]}", highlight=False)
    run_with_progress(db, loaded, flight, console, quiet=quiet)
    render_grid(console, db, flight)
    console.print(f"config: {cfg_path}", highlight=False)
    console.print(f"logs:   {loaded.logs_dir / str(flight)}", highlight=False)
    console.print(f"try:    pushgate -c {cfg_path} flight show {flight}", highlight=False)
    db.dispose()
    return base
