"""The `pushgate` command: thin click commands that parse, call one function, print."""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.text import Text

from pushgate import config as cfgmod
from pushgate.config import Loaded
from pushgate.db.engine import Database
from pushgate.errors import (
    EXIT_BROKEN,
    EXIT_INTERRUPTED,
    EXIT_NOT_PASSED,
    EXIT_OK,
    PushgateError,
)
from pushgate.redact import inert

F = TypeVar("F", bound=Callable[..., Any])
# No markup: printed text (commit subjects, test output) may hold [brackets] of its own.
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def echo(text: object, **kw: Any) -> None:
    """click.echo for text that may hold untrusted parts (commit authors and subjects, job
    names, testids, log lines): terminal control characters are shown escaped."""
    click.echo(inert(str(text)), **kw)


def fail(msg: str, code: int = 2) -> NoReturn:
    # The message may quote user text with brackets (TOML tables): never parse it as markup.
    line = Text("error: ", style="bold red")
    line.append(inert(msg, multiline=False))
    err_console.print(line, highlight=False, soft_wrap=True)
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
        except PushgateError as e:
            fail(str(e))

    return wrapper  # type: ignore[return-value]


class _Main(click.Group):
    """The top group: a usage error is one line (exit 2), Ctrl-C exits 130, and an error
    that is a bug in pushgate is one line naming where it happened (exit 3; the traceback
    with PUSHGATE_DEBUG=1)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as e:
            fail(e.format_message(), e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            fail("interrupted", EXIT_INTERRUPTED)
        except Exception as e:  # noqa: BLE001 - the one place a bug is reported
            if os.environ.get("PUSHGATE_DEBUG"):
                traceback.print_exc()
            tb = traceback.extract_tb(e.__traceback__)
            where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
            fail(
                f"internal error{where}: {type(e).__name__}: {e} (a bug in pushgate;"
                " PUSHGATE_DEBUG=1 shows the traceback)",
                EXIT_BROKEN,
            )
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


def _positive(option: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        fail(f"{option} must be a positive number of seconds, not {value}")
    return value


def _one_line(option: str, value: str, limit: int) -> str:
    if not value.strip() or not value.isprintable() or len(value) > limit:
        fail(f"{option}: one line of printable text, at most {limit} characters")
    return value


@click.group(cls=_Main)
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
@click.option(
    "--dump-flights",
    is_flag=True,
    help="Print every branch's constructed jobs and runvars, with placeholder "
    "revisions, one per line (diff it to review a config change).",
)
@pass_ctx
@handle_errors
def check(ctx: Ctx, dump_flights: bool) -> None:
    """Validate the config and print a summary."""
    from pushgate.publish.summary import config_summary
    from pushgate.run.plan import dump_flights as dump

    if dump_flights:
        echo("\n".join(dump(ctx.loaded)))
        return
    console.print(inert(config_summary(ctx.loaded)), highlight=False, soft_wrap=True)


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
    from pushgate.run.plan import create_planned, plan_flight

    try:
        cfgmod.check_name(blessing)
    except ValueError as e:
        fail(f"--blessing: {e}")
    # Plan first (fetch, resolve, select jobs) so bad input writes no database row.
    plan = plan_flight(ctx.loaded, branch, blessing=blessing, revs=_parse_revs(revs), jobs=jobs)
    echo(create_planned(ctx.db, plan))


@flight.command("run")
@click.argument("flight_no", metavar="N", type=int)
@click.option("--quiet", "-q", is_flag=True, help="No live progress.")
@pass_ctx
@handle_errors
def flight_run(ctx: Ctx, flight_no: int, quiet: bool) -> None:
    """Run flight N (resuming it if it was interrupted); print its grid."""
    from pushgate.cli.progress import run_with_progress
    from pushgate.publish.grid import render_grid

    statuses, notes = run_with_progress(ctx.db, ctx.loaded, flight_no, console, quiet=quiet)
    for note in notes:
        err_console.print(inert(f"note: {note}"), highlight=False)
    render_grid(console, ctx.db, flight_no)
    console.print(inert(f"logs: {ctx.loaded.logs_dir / str(flight_no)}"), highlight=False)
    sys.exit(flight_exit(list(statuses.values())))


def flight_exit(statuses: list[str]) -> int:
    """`flight run`: 0 every job passed, 1 a job failed (the thing under test), 3 none
    failed but one is broken, starved or blocked by one (the harness or the farm), 130 the
    runner was interrupted before every job finished."""
    from pushgate.model import FINAL_JOB_STATUSES, Status

    if any(s not in FINAL_JOB_STATUSES for s in statuses):
        return EXIT_INTERRUPTED
    if any(s == Status.FAIL for s in statuses):
        return EXIT_NOT_PASSED
    if any(s != Status.PASS for s in statuses):
        return EXIT_BROKEN
    return EXIT_OK


@flight.command("show")
@click.argument("flight_no", metavar="N", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
@handle_errors
def flight_show(ctx: Ctx, flight_no: int, as_json: bool) -> None:
    """Print flight N's job x step grid."""
    from pushgate.publish.grid import flight_data, render_grid

    if as_json:
        data = flight_data(ctx.db, flight_no)
        if data is None:
            fail(f"flight {flight_no} does not exist")
        echo(json.dumps(data, indent=2))
        return
    if flight_data(ctx.db, flight_no) is None:
        fail(f"flight {flight_no} does not exist")
    render_grid(console, ctx.db, flight_no)


@flight.command("list")
@click.option("--branch")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@pass_ctx
@handle_errors
def flight_list(ctx: Ctx, branch: str | None, limit: int) -> None:
    """List recent flights."""
    from pushgate.publish.grid import render_flight_list

    render_flight_list(console, ctx.db, branch, limit)


@main.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="No live progress.")
def demo(directory: Path | None, quiet: bool) -> None:
    """Make a real project with git history in DIRECTORY and run the gate on it."""
    from pushgate.demo import run_demo

    try:
        run_demo(directory, console, quiet=quiet)
    except PushgateError as e:
        fail(str(e))


# --- gate, report, daemon ---


@main.command()
@click.argument("flight_no", metavar="N", type=int)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@click.option(
    "--html",
    "html_dir",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Also write the flight's HTML pages into DIR.",
)
@click.option(
    "--now",
    is_flag=True,
    help="Recompute the verdict against today's history instead of the one decided.",
)
@pass_ctx
@handle_errors
def report(ctx: Ctx, flight_no: int, as_json: bool, html_dir: Path | None, now: bool) -> None:
    """Print flight N's report as decided and mailed (subject, headers, body)."""
    from pushgate.publish.report import build_report

    if html_dir is not None:
        _writable_dir("--html", html_dir)
    rep = build_report(ctx.db, ctx.loaded, flight_no, now=now)
    if html_dir is not None:
        from pushgate.publish.report import write_flight_html

        try:
            written = write_flight_html(ctx.db, ctx.loaded, flight_no, html_dir, rep)
        except OSError as e:
            fail(f"--html {html_dir}: cannot write: {e.strerror or e}")
        for p in written:
            err_console.print(inert(f"wrote {p}"), highlight=False)
    if as_json:
        echo(json.dumps(rep.data, indent=2))
    else:
        if rep.note:
            echo(rep.note)
        echo(rep.mail_text(), nl=False)
        if rep.after:
            err_console.print(inert(f"note: {rep.after}"), highlight=False, soft_wrap=True)


def _writable_dir(option: str, path: Path) -> None:
    """Make DIR (and its parents) or fail with one line, before anything is written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"{option} {path}: cannot create: {e.strerror or e}")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"{option} {path}: not a writable directory")


@main.group()
def gate() -> None:
    """Block, unblock or force a branch's pushes."""


def _show_gate(branch: str, st: Any) -> None:
    parts = [f"blocked: {st.blocked_why}" if st.blocked_why is not None else "not blocked"]
    if st.force:
        parts.append("next push forced")
    if st.force_revision:
        parts.append(f"push of {st.force_revision} forced")
    if (st.blocked_why is not None or st.force or st.force_revision) and st.by:
        parts.append(f"by {st.by}")
    echo(f"{branch}: {'; '.join(parts)}")


@gate.command("block")
@click.argument("branch")
@click.option("--why", required=True, help="Why pushes are blocked (shown in reports).")
@click.option("--by", metavar="WHO", help="Who blocks (default: the login name).")
@pass_ctx
@handle_errors
def gate_block(ctx: Ctx, branch: str, why: str, by: str | None) -> None:
    """Stop BRANCH from pushing until `gate unblock` or `gate force`."""
    from pushgate.gate import push as gatemod

    _one_line("--why", why, 1000)
    if by is not None:
        _one_line("--by", by, cfgmod.NAME_MAX)
    _show_gate(branch, gatemod.block(ctx.db, ctx.loaded, branch, why, by))


@gate.command("unblock")
@click.argument("branch")
@pass_ctx
@handle_errors
def gate_unblock(ctx: Ctx, branch: str) -> None:
    """Let BRANCH push again."""
    from pushgate.gate import push as gatemod

    _show_gate(branch, gatemod.unblock(ctx.db, ctx.loaded, branch))


@gate.command("force")
@click.argument("branch")
@click.option("--rev", metavar="REV", help="Force only a push of this revision.")
@click.option("--by", metavar="WHO", help="Who forces (default: the login name).")
@pass_ctx
@handle_errors
def gate_force(ctx: Ctx, branch: str, rev: str | None, by: str | None) -> None:
    """Push BRANCH's next tested revision whatever its verdict (clears a block)."""
    from pushgate.gate import push as gatemod

    if by is not None:
        _one_line("--by", by, cfgmod.NAME_MAX)
    _show_gate(branch, gatemod.force(ctx.db, ctx.loaded, branch, rev, by))


@gate.command("show")
@click.argument("branch")
@pass_ctx
@handle_errors
def gate_show(ctx: Ctx, branch: str) -> None:
    """Print BRANCH's block/force state."""
    from pushgate.gate import push as gatemod

    ctx.loaded.branch(branch)
    _show_gate(branch, gatemod.gate_state(ctx.db, branch))


@main.group()
def branch() -> None:
    """Run a branch's push-gate cycle."""


@branch.command("run")
@click.argument("name", metavar="BRANCH")
@click.option("--quiet", "-q", is_flag=True, help="No live progress.")
@pass_ctx
@handle_errors
def branch_run(ctx: Ctx, name: str, quiet: bool) -> None:
    """One cycle of BRANCH: fetch, test, retest, push, report, mail (resumes a cycle
    that was interrupted)."""
    from pushgate.cli.progress import run_with_progress
    from pushgate.daemon.cycle import run_cycle
    from pushgate.gate.cycle import EXIT_STOPPED, Stopper
    from pushgate.gate.push import push_line

    stopper = Stopper()
    stopper.install()

    def run(db: Database, loaded: Loaded, flight_no: int) -> object:
        return run_with_progress(db, loaded, flight_no, console, quiet=quiet)

    res = run_cycle(ctx.db, ctx.loaded, name, run=run, stopper=stopper)
    if res.action == "idle":
        echo(f"{name}: nothing to do")
        sys.exit(EXIT_OK)
    echo(f"{name}: flight {res.flight} ({res.reason}): {res.action}")
    for note in res.notes:
        echo(f"  {note}")
    if res.report is not None:
        echo(f"  {res.report.subject}")
    if res.push is not None:
        echo(f"  push: {push_line(res.push)}")
    if res.action == "stopped":
        sys.exit(EXIT_STOPPED)
    assert res.flight is not None
    sys.exit(cycle_exit(ctx.db, res.flight))


def cycle_exit(db: Database, flight: int) -> int:
    """`branch run`, from the stored push decision and verdict: 0 pushed, or nothing to
    push and the verdict tolerable; 1 not pushed (regressions, a block, a refused push);
    3 only broken or unfinished jobs block, or the push failed (tried again later)."""
    from pushgate.db import pushes as dbp
    from pushgate.gate.push import PUSHED_STATUSES
    from pushgate.judge import verdicts
    from pushgate.judge.verdict import BLOCKER_REGRESSION

    with db.read() as conn:
        push = dbp.get_push(conn, flight)
    if push is not None and push.status in PUSHED_STATUSES:
        return EXIT_OK
    if push is None or push.status in ("failed", "pending"):
        return EXIT_BROKEN
    vd = verdicts.stored(db, flight)
    if vd is None:
        return EXIT_BROKEN
    c = vd.classification
    if c.tolerable:
        return EXIT_NOT_PASSED if push.status in ("not-pushed", "refused") else EXIT_OK
    if any(f.blocker == BLOCKER_REGRESSION for f in c.all_failures):
        return EXIT_NOT_PASSED
    return EXIT_BROKEN


@main.command()
@click.option(
    "--once", is_flag=True, help="One cycle of every branch and the bisections open, then exit."
)
@click.option(
    "--poll",
    "poll_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between checks of an idle branch's input.",
)
@pass_ctx
@handle_errors
def daemon(ctx: Ctx, once: bool, poll_s: float) -> None:
    """Run every branch's gate continuously (SIGTERM stops after the current step)."""
    import logging

    from pushgate.daemon.loop import run_daemon

    _positive("--poll", poll_s)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    sys.exit(run_daemon(ctx.db, ctx.loaded, poll_s=poll_s, once=once))


@main.command()
@click.option(
    "--dry-run", is_flag=True, help="Say what would be deleted and how much; delete nothing."
)
@click.option("--verbose", "-v", is_flag=True, help="One line per dir, with why.")
@pass_ctx
@handle_errors
def gc(ctx: Ctx, dry_run: bool, verbose: bool) -> None:
    """Delete work dirs, logs and artifacts past the [retention] settings."""
    from pushgate.daemon.retention import human, run_gc

    res = run_gc(ctx.db, ctx.loaded, dry_run=dry_run)
    if verbose or dry_run:
        for d in res.items:
            size = "failed: " + d.error if d.error else human(d.bytes)
            echo(f"{d.label()}: {size} ({d.why})")
        for why, n in sorted(res.kept.items()):
            echo(f"kept {n}: {why}")
        for s in res.skipped:
            echo(f"left alone: {s}")
    echo(res.summary())
    if res.errors:
        sys.exit(3)  # incomplete: some dirs could not be deleted (said above)


@main.group()
def mail() -> None:
    """The mail queue."""


@mail.command("flush")
@pass_ctx
@handle_errors
def mail_flush(ctx: Ctx) -> None:
    """Deliver every due queued mail now."""
    from pushgate.db import mailqueue as dbm
    from pushgate.publish.mail.outbox import flush

    res = flush(ctx.db, ctx.loaded)
    with ctx.db.read() as conn:
        counts = dbm.mail_counts(conn)
    echo(
        f"sent {res.sent}, to retry {res.retry}, failed {res.failed}; queue: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )


@mail.command("list")
@click.option(
    "--status",
    type=click.Choice(["queued", "sent", "failed"]),
    help="Only the mails with this status.",
)
@pass_ctx
@handle_errors
def mail_list(ctx: Ctx, status: str | None) -> None:
    """The mails queued, sent and failed, with their last error."""
    from pushgate.db import mailqueue as dbm
    from pushgate.publish.mail.outbox import subject_of

    with ctx.db.read() as conn:
        rows = [m for m in dbm.list_mail(conn) if status in (None, m.status)]
    for m in rows:
        flight = f"flight {m.flight}" if m.flight is not None else "-"
        tries = f"{m.attempts} attempt{'s' if m.attempts != 1 else ''}"
        echo(f"{m.id:>5} {m.status:<7} {m.kind:<8} {flight:<12} {tries:<11} {subject_of(m)}")
        if m.last_error and m.status != "sent":
            echo(f"      last error: {m.last_error}")


@mail.command("retry")
@click.argument("mail_ids", metavar="[ID]...", nargs=-1, type=int)
@click.option("--failed", "all_failed", is_flag=True, help="Every failed mail.")
@pass_ctx
@handle_errors
def mail_retry(ctx: Ctx, mail_ids: tuple[int, ...], all_failed: bool) -> None:
    """Send failed mails again (after the mail config is fixed): the IDs of `mail list`,
    or --failed for all of them. A mail sent already is never sent again."""
    from pushgate.publish.mail.outbox import retry_failed

    if bool(mail_ids) == all_failed:
        fail("mail retry wants mail IDs or --failed (one of them)")
    ids, res = retry_failed(ctx.db, ctx.loaded, None if all_failed else list(mail_ids))
    if not ids:
        echo("no failed mail to retry")
        return
    echo(f"retried {len(ids)}: sent {res.sent}, to retry {res.retry}, failed {res.failed}")
    if res.failed or res.retry:
        echo("see `pushgate mail list` for the errors")
        sys.exit(1)


# --- bisection ---


def _tree_revs(values: tuple[str, ...], what: str) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for v in values:
        tree, sep, rev = v.partition("=")
        if not sep or not tree or not rev:
            fail(f"{what} wants TREE=REV, not {v!r}")
        out[tree] = rev
    return out or None


@main.command("bisect")
@click.argument("branch")
@click.argument("job", required=False)
@click.argument("testid", required=False)
@click.option("--good", multiple=True, metavar="TREE=REV", help="Basis pass revision(s).")
@click.option("--bad", multiple=True, metavar="TREE=REV", help="Failing revision(s).")
@click.option("--hosts", type=int, default=1, show_default=True, help="Probes per round.")
@click.option("--osstest-exit-codes", is_flag=True, help="Exit 16 for a flake, as osstest.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the outcome.")
@pass_ctx
@handle_errors
def bisect_cmd(
    ctx: Ctx,
    branch: str,
    job: str | None,
    testid: str | None,
    good: tuple[str, ...],
    bad: tuple[str, ...],
    hosts: int,
    osstest_exit_codes: bool,
    quiet: bool,
) -> None:
    """Bisect BRANCH JOB TESTID to its culprit; `pushgate bisect status` lists bisections;
    `pushgate bisect run [ID]` searches the open bisections (or bisection ID) that gate
    cycles opened, as the daemon does.

    Exits with the outcome's code: 4 complete, 8 inconclusive, 12 inconsistent,
    16 unreproducible, 20 flake, 32 doubtful (`bisect run`: 0 when searched, 130 when
    stopped by a signal)."""
    from pushgate.bisect.loop import BisectStopped, bisect_one
    from pushgate.gate.cycle import EXIT_STOPPED, Stopper

    # Quiet: the lines of the flights the bisector starts and ends only (`flight N: ...`).
    say = (lambda s: echo(s) if s.startswith("flight ") else None) if quiet else echo
    if branch == "status" and job is None:
        _bisect_status(ctx)
        return
    stopper = Stopper()
    stopper.install()
    if branch == "run" and testid is None:
        sys.exit(_bisect_run(ctx, job, say, lambda: stopper.stop))
    if job is None or testid is None:
        fail(
            "usage: pushgate bisect BRANCH JOB TESTID"
            " (or: pushgate bisect status, pushgate bisect run [ID])"
        )
    if hosts < 1:
        fail("--hosts must be at least 1")
    try:
        res = bisect_one(
            ctx.db,
            ctx.loaded,
            branch,
            job,
            testid,
            _tree_revs(good, "--good"),
            _tree_revs(bad, "--bad"),
            hosts=hosts,
            say=say,
            stop=lambda: stopper.stop,
        )
    except BisectStopped as e:
        echo(str(e))
        sys.exit(EXIT_STOPPED)
    echo(
        f"outcome: {res.outcome} ({len(res.probe_flights)} flights, {res.runs} runs,"
        f" confidence {res.confidence:.5f})"
    )
    if res.culprit_commit:
        echo(f"culprit: {res.culprit_tree} {res.culprit_commit}")
        for p in res.not_present:
            echo(f"not present: {p}")
    if res.svg_path is not None:
        echo(f"graph: {res.svg_path}")
    code = res.exit_code
    if osstest_exit_codes and res.outcome == "flake":
        code = 16
    sys.exit(code)


def _bisect_run(ctx: Ctx, bid: str | None, say: Any, stop: Any) -> int:
    """`pushgate bisect run [ID]`: search bisection ID, or every open one, to its end."""
    from pushgate.bisect import loop
    from pushgate.bisect.loop import BisectStopped
    from pushgate.gate.cycle import EXIT_STOPPED

    if bid is not None and not bid.isdigit():
        fail(f"bisect run wants a bisection id, not {bid!r}")
    try:
        if bid is None:
            results = loop.run_open(ctx.db, ctx.loaded, say=say, stop=stop)
        else:
            row, res = loop.run_one(ctx.db, ctx.loaded, int(bid), say=say, stop=stop)
            results = [res] if res is not None else []
            if res is None:
                echo(f"bisection {row.id}: {row.status} (not running: nothing to do)")
    except BisectStopped as e:
        echo(str(e))
        return EXIT_STOPPED
    for r in results:
        echo(
            f"bisection {r.id} {r.job} {r.testid}: {r.outcome}"
            + (f" {r.culprit_tree} {r.culprit_commit}" if r.culprit_commit else "")
            + f" ({len(r.probe_flights)} probe flights, {r.runs} runs)"
        )
    if bid is None and not results:
        echo("no open bisection to search")
    return 0


def _bisect_status(ctx: Ctx) -> None:
    from rich.table import Table
    from rich.text import Text

    from pushgate.db import bisections as dbb

    with ctx.db.read() as conn:
        rows = dbb.list_bisections(conn)
    table = Table(
        "id", "branch", "job", "testid", "status", "culprit", "confidence", "runs", "flights"
    )
    for r in rows:
        culprit = f"{r.culprit_tree} {r.culprit_commit[:12]}" if r.culprit_commit else ""
        conf = f"{r.confidence:.4f}" if r.confidence is not None else ""
        # Text cells: a testid may contain [...] that rich would read as markup.
        cells = [
            str(r.id),
            r.branch,
            r.job,
            r.testid,
            r.status,
            culprit,
            conf,
            str(r.runs),
            f"{r.basis_flight or '-'}..{r.latest_flight or '-'}",
        ]
        table.add_row(*(Text(inert(c, multiline=False)) for c in cells))
    console.print(table)


if __name__ == "__main__":
    main()
