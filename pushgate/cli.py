"""The `pushgate` command: thin click commands that parse, call one function, print."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from pushgate import config as cfgmod
from pushgate.config import ConfigError, Loaded
from pushgate.db.engine import Database, DatabaseError
from pushgate.flights import FlightError
from pushgate.git import GitError

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)


def fail(msg: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


class Ctx:
    def __init__(self, config: str | None):
        self.config_arg = config
        self._loaded: Loaded | None = None
        self._db: Database | None = None

    @property
    def loaded(self) -> Loaded:
        if self._loaded is None:
            self._loaded = cfgmod.load(cfgmod.config_path(self.config_arg))
        return self._loaded

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.loaded.database_url)
            self._db.upgrade()
        return self._db


pass_ctx = click.make_pass_decorator(Ctx)


def handle_errors(fn: F) -> F:
    """Known errors become one clear line on stderr and exit status 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, FlightError, GitError, DatabaseError) as e:
            fail(str(e))

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option(
    "--config",
    "-c",
    metavar="FILE",
    help="pushgate.toml (default: $PUSHGATE_CONFIG or ./pushgate.toml)",
)
@click.version_option(package_name="pushgate")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """pushgate: a test harness and push gate for git trees."""
    ctx.obj = Ctx(config)


@main.command()
@pass_ctx
@handle_errors
def check(ctx: Ctx) -> None:
    """Validate the config and print a summary."""
    from pushgate.report.summary import config_summary

    console.print(config_summary(ctx.loaded), highlight=False)


@main.group()
def flight() -> None:
    """Create, run and show flights."""


def _parse_revs(revs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for r in revs:
        tree, sep, rev = r.partition("=")
        if not sep or not tree or not rev:
            fail(f"--rev {r!r}: expected TREE=REV")
        out[tree] = rev
    return out


@flight.command("new")
@click.argument("branch")
@click.option(
    "--blessing",
    default="real",
    show_default=True,
    help="Blessing the flight takes when it finishes (real, play, ...).",
)
@click.option(
    "--rev",
    "revs",
    multiple=True,
    metavar="TREE=REV",
    help="Test this revision of TREE instead of its default.",
)
@click.option(
    "--jobs",
    "jobs",
    metavar="PATTERN",
    help="Only jobs matching PATTERN (and the builds they need).",
)
@pass_ctx
@handle_errors
def flight_new(
    ctx: Ctx, branch: str, blessing: str, revs: tuple[str, ...], jobs: str | None
) -> None:
    """Create a flight of BRANCH's jobs and print its number."""
    from pushgate.flights import new_flight

    n = new_flight(ctx.db, ctx.loaded, branch, blessing=blessing, revs=_parse_revs(revs), jobs=jobs)
    click.echo(n)


@flight.command("run")
@click.argument("flight_no", metavar="N", type=int)
@click.option("--quiet", "-q", is_flag=True, help="No live progress.")
@pass_ctx
@handle_errors
def flight_run(ctx: Ctx, flight_no: int, quiet: bool) -> None:
    """Run flight N (resuming it if it was interrupted); print its grid."""
    from pushgate.progress import run_with_progress
    from pushgate.report.grid import render_grid

    statuses, notes = run_with_progress(ctx.db, ctx.loaded, flight_no, console, quiet=quiet)
    for note in notes:
        err_console.print(f"note: {note}", highlight=False)
    render_grid(console, ctx.db, flight_no)
    console.print(f"logs: {ctx.loaded.logs_dir / str(flight_no)}", highlight=False)


@flight.command("show")
@click.argument("flight_no", metavar="N", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@handle_errors
def flight_show(ctx: Ctx, flight_no: int, as_json: bool) -> None:
    """Print flight N's job x step grid."""
    from pushgate.report.grid import flight_data, render_grid

    if as_json:
        data = flight_data(ctx.db, flight_no)
        if data is None:
            fail(f"flight {flight_no} does not exist")
        click.echo(json.dumps(data, indent=2))
        return
    render_grid(console, ctx.db, flight_no)


@flight.command("list")
@click.option("--branch")
@click.option("--limit", default=20, show_default=True)
@pass_ctx
@handle_errors
def flight_list(ctx: Ctx, branch: str | None, limit: int) -> None:
    """List recent flights."""
    from pushgate.report.grid import render_flight_list

    render_flight_list(console, ctx.db, branch, limit)


@main.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="No live progress.")
def demo(directory: Path | None, quiet: bool) -> None:
    """Make a real project with git history in DIRECTORY and run the gate on it."""
    from pushgate.demo import run_demo

    try:
        run_demo(directory, console, quiet=quiet)
    except (ConfigError, FlightError, GitError, DatabaseError) as e:
        fail(str(e))


if __name__ == "__main__":
    main()
