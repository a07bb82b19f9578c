"""Farm commands: `hosts` (and set-health, history, allocate, release), `queue`, `worker`,
`workers`. Registered on the main group by pushgate/cli/__init__.py."""

from __future__ import annotations

import getpass
import sys
import time

import click
from rich.table import Table
from rich.text import Text

from pushgate import config as cfgmod
from pushgate.cli.main import Ctx, _one_line, console, echo, handle_errors, main, pass_ctx
from pushgate.db.engine import Database
from pushgate.errors import EXIT_INTERRUPTED
from pushgate.redact import inert


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _ago(t: float) -> str:
    d = max(0.0, time.time() - t)
    return (
        f"{d:.0f}s ago" if d < 120 else f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.1f}h ago"
    )


def _table(*cols: str) -> Table:
    return Table(*cols)


def _row(table: Table, cells: list[str]) -> None:
    table.add_row(*(Text(inert(c, multiline=False)) for c in cells))


def _db(ctx: Ctx) -> Database:
    """The database, with the config's hosts in it (a new host is listed before any run)."""
    from pushgate.run.scheduler import sync_config_hosts

    sync_config_hosts(ctx.db, ctx.loaded)
    return ctx.db


def _by(by: str | None) -> str:
    if by is not None:
        return _one_line("--by", by, cfgmod.NAME_MAX)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@main.group(invoke_without_command=True)
@click.pass_context
@handle_errors
def hosts(cctx: click.Context) -> None:
    """The farm's hosts: state, health, flags, current job and last jobs."""
    if cctx.invoked_subcommand is not None:
        return
    from pushgate.run import farm

    ctx = cctx.find_object(Ctx)
    assert ctx is not None
    table = _table("host", "executor", "slots", "state", "health", "flags", "now", "last")
    for h in farm.hosts_overview(_db(ctx)):
        state = h.state
        if h.held_by:
            state += f" by {h.held_by} until {_when(h.held_until)}"
        health = h.health + (f" ({h.health_why})" if h.health_why else "")
        _row(
            table,
            [
                h.host,
                h.executor,
                str(h.slots),
                state,
                health,
                ",".join(h.flags),
                " ".join(h.current) or "-",
                " ".join(h.last) or "-",
            ],
        )
    console.print(table)


@hosts.command("set-health")
@click.argument("host")
@click.argument(
    "state", metavar="STATE", type=click.Choice(["good", "unknown", "bad", "maintenance"])
)
@click.option("--why", required=True, help="Why (kept in the host's history).")
@click.option("--by", metavar="WHO", help="Who (default: the login name).")
@pass_ctx
@handle_errors
def hosts_set_health(ctx: Ctx, host: str, state: str, why: str, by: str | None) -> None:
    """Set HOST's health: jobs get only good or unknown hosts (with a health-check job
    configured, a host set unknown gets only that job until it passes)."""
    from pushgate.run import farm

    _one_line("--why", why, 1000)
    check = ctx.loaded.cfg.runner.health_check_job is not None
    farm.set_health(_db(ctx), host, state, why, _by(by), check=check)
    echo(f"{host}: {state}")


@hosts.command("history")
@click.argument("host")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@pass_ctx
@handle_errors
def hosts_history(ctx: Ctx, host: str, limit: int) -> None:
    """HOST's jobs, health changes and holds, newest first."""
    from pushgate.run import farm

    for line in farm.host_history(_db(ctx), host, limit):
        echo(f"{_when(line.at)}  {line.text}")


@hosts.command("allocate")
@click.argument("flags")
@click.option("--for", "duration", required=True, metavar="DURATION", help="e.g. 2h, 30m, 1d.")
@click.option("--why", default="taken by hand", show_default=True)
@click.option("--by", metavar="WHO", help="Who (default: the login name).")
@pass_ctx
@handle_errors
def hosts_allocate(ctx: Ctx, flags: str, duration: str, why: str, by: str | None) -> None:
    """Take a host that has FLAGS (comma-separated) for DURATION, ahead of every flight."""
    from pushgate.run import farm

    _one_line("--why", why, 1000)
    hold = farm.allocate(_db(ctx), flags, farm.parse_duration(duration), _by(by), why)
    busy = f"; waits for {hold.busy} running job(s) to end" if hold.busy else ""
    echo(f"{hold.host}: held until {_when(hold.until)}{busy}")


@hosts.command("release")
@click.argument("host")
@click.option("--by", metavar="WHO", help="Who (default: the login name).")
@pass_ctx
@handle_errors
def hosts_release(ctx: Ctx, host: str, by: str | None) -> None:
    """End a hold of HOST (`hosts allocate`) before its time."""
    from pushgate.run import farm

    farm.release(_db(ctx), host, _by(by))
    echo(f"{host}: released")


@main.command("queue")
@pass_ctx
@handle_errors
def queue_cmd(ctx: Ctx) -> None:
    """What waits: jobs in queue order, the flags they need, since when, and an estimate
    of when they run (from past durations of the same job)."""
    from pushgate.run import farm

    table = _table(
        "flight", "job", "flags", "prio", "waiting since", "waits for", "typical", "runs"
    )
    for q in farm.queue(_db(ctx)):
        flags = ",".join(q.flags) or "-"
        if q.pinned:
            flags += f" on {q.pinned}"
        typical = f"{q.typical_s:.0f}s" if q.typical_s is not None else "?"
        eta = "-" if q.eta is None else "now" if q.eta <= time.time() + 1 else _when(q.eta)
        _row(
            table,
            [
                str(q.flight),
                q.job,
                flags,
                str(q.priority),
                _when(q.since),
                q.waits_for,
                typical,
                eta,
            ],
        )
    console.print(table)


@main.command("worker")
@click.option("--name", help="This worker's machine name in its id (default: the host name).")
@click.option("--once", is_flag=True, help="Exit when no job is queued or held anywhere.")
@click.option("--quiet", "-q", is_flag=True, help="No line per job.")
@pass_ctx
@handle_errors
def worker_cmd(ctx: Ctx, name: str | None, once: bool, quiet: bool) -> None:
    """Run queued jobs of every flight, with other workers on any machines sharing the
    database (SIGTERM: stop after the current steps; their jobs are requeued)."""
    from pushgate.run.worker import Worker

    if name is not None:
        _one_line("--name", name, cfgmod.NAME_MAX)
    import asyncio

    def say(line: str) -> None:
        if not quiet:
            echo(f"{time.strftime('%H:%M:%S')} {line}")

    w = Worker(_db(ctx), ctx.loaded, name=name, say=say)
    asyncio.run(w.run(once=once))
    if w.shared is not None and w.shared.stopping.is_set():
        sys.exit(EXIT_INTERRUPTED)


@main.command("workers")
@click.option("--all", "all_", is_flag=True, help="Also workers stopped more than a day ago.")
@pass_ctx
@handle_errors
def workers_cmd(ctx: Ctx, all_: bool) -> None:
    """Workers (and flight runs): last heartbeat, state, the jobs they hold."""
    from pushgate.run import farm

    table = _table("worker", "machine", "pid", "started", "heartbeat", "state", "jobs")
    now = time.time()
    for w in farm.workers(_db(ctx), all_):
        if w.stopped is not None:
            state = f"stopped {_ago(w.stopped)}: {w.why or '-'}"
        elif w.lease_until < now:
            state = "lease ran out"
        else:
            state = "live"
        jobs = " ".join(f"{f}.{j}({s})" for f, j, s in w.jobs) or "-"
        _row(
            table,
            [w.worker, w.machine, str(w.pid), _when(w.started), _ago(w.heartbeat), state, jobs],
        )
    console.print(table)
