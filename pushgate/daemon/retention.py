"""`pushgate gc`: retention of work dirs, logs and artifacts (the `[retention]` section).

What goes:

- the work dir of a finished job: at once when it passed, `failed_work_days` after it
  finished when it did not;
- a finished flight's logs (its whole logs dir) and artifacts, once it finished more than
  `keep_days` ago and is not one of the last `keep_flights` flights of its branch.

What never goes: anything of a flight or job still running; the logs and artifacts of
each branch's last pushed flight, of a gate cycle not done, and of a running bisection's
basis, latest and probe flights; the artifacts of builds a kept flight uses, and of the
passed builds a running bisection may still reuse (db/retention.py says which).

The walk starts from the disk, not the database: each root of `paths.flight_roots` holds
`<flight>/<job>` dirs, and only what is there is looked up. A name is never taken from the
database to make a path, so a hostile job name cannot point a deletion outside its root.
Deleting opens every dir with O_NOFOLLOW relative to its parent's descriptor: a symlink
inside a work dir is removed as a link and never followed, at any depth.

Deleted logs leave their step rows naming files that are gone: the HTML pages link a log
only when its file is there (publish/report.py), and every deletion is recorded, one line
per dir, in `paths.gc_journal` (state/gc.log).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pushgate import paths
from pushgate.config import Loaded
from pushgate.db import retention as dbr
from pushgate.db.engine import Database
from pushgate.model import Status

log = logging.getLogger(__name__)

DAY_S = 86400.0
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Doomed:
    """A dir retention deletes: `<root of kind>/<flight>[/<job>]`."""

    kind: str  # work | artifacts | logs
    flight: int
    job: str | None  # None: the flight's whole dir
    why: str
    bytes: int = 0
    error: str | None = None

    @property
    def parts(self) -> tuple[str, ...]:
        return (str(self.flight),) if self.job is None else (str(self.flight), self.job)

    def label(self) -> str:
        return f"{self.kind} {self.flight}" + (f" {self.job}" if self.job else "")


@dataclass
class GcResult:
    items: list[Doomed] = field(default_factory=list)
    # Dirs that stay although old enough to go, by reason.
    kept: dict[str, int] = field(default_factory=dict)
    # Entries below the roots left alone (not a flight's dir, a symlink, no such flight).
    skipped: list[str] = field(default_factory=list)
    dry_run: bool = False

    def total(self, kind: str | None = None) -> int:
        return sum(d.bytes for d in self.items if kind is None or d.kind == kind)

    @property
    def errors(self) -> list[Doomed]:
        return [d for d in self.items if d.error]

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        by_kind = ", ".join(
            f"{k} {sum(d.kind == k for d in self.items)} dirs {human(self.total(k))}"
            for k in ("work", "logs", "artifacts")
        )
        kept = sum(self.kept.values())
        return f"{verb} {human(self.total())} ({by_kind}); {kept} kept by rule" + (
            f"; {len(self.errors)} failed" if self.errors else ""
        )


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


# --- deciding ------------------------------------------------------------------------------


def _flight_dirs(root: os.PathLike[str], res: GcResult, kind: str) -> dict[int, list[str]]:
    """flight -> the plain dirs inside its dir under `root` (job dirs), from the disk."""
    out: dict[int, list[str]] = {}
    try:
        top = list(os.scandir(root))
    except FileNotFoundError:
        return out
    for e in top:
        f = paths.flight_of_dir(e.name)
        if f is None:
            continue
        if not e.is_dir(follow_symlinks=False):
            res.skipped.append(f"{kind} {e.name}: not a directory")
            continue
        with os.scandir(e.path) as it:
            out[f] = sorted(j.name for j in it if paths.plain_name(j.name))
    return out


def plan_gc(db: Database, loaded: Loaded, now: float | None = None) -> GcResult:
    """What retention deletes now, nothing measured or deleted yet."""
    now = time.time() if now is None else now
    rc = loaded.cfg.retention
    roots = paths.flight_roots(loaded)
    res = GcResult()
    on_disk = {kind: _flight_dirs(root, res, kind) for kind, root in roots.items()}
    all_flights = set().union(*(d.keys() for d in on_disk.values()))
    with db.read() as conn:
        ends = dbr.flight_ends(conn, all_flights)
        jobs = dbr.job_ends(conn, set(on_disk["work"]) | set(on_disk["artifacts"]))
        last = dbr.last_flights(conn, rc.keep_flights)
        held = dbr.held_flights(conn)
        kept_flights = {f for f in ends if not _expired(ends[f], now, rc.keep_days, last, held)}
        builds = dbr.held_builds(conn, kept_flights)

    def keep(why: str) -> None:
        res.kept[why] = res.kept.get(why, 0) + 1

    for kind, dirs in on_disk.items():
        for f, names in sorted(dirs.items()):
            end = ends.get(f)
            if end is None:
                res.skipped.append(f"{kind} {f}: no such flight in the database")
                continue
            if kind == "work":
                for j in names:
                    why = _work_goes(jobs.get((f, paths.job_of_dir(j))), now, rc.failed_work_days)
                    if why is not None:
                        res.items.append(Doomed(kind, f, j, why))
                continue
            reason = _expired(end, now, rc.keep_days, last, held)
            if reason is None:
                if end.finished is not None and f in held:
                    keep(held[f])
                continue
            if kind == "logs":
                res.items.append(Doomed(kind, f, None, reason))
                continue
            for j in names:
                if (f, paths.job_of_dir(j)) in builds:
                    keep(builds[(f, paths.job_of_dir(j))])
                else:
                    res.items.append(Doomed(kind, f, j, reason))
    return res


def _expired(
    end: dbr.FlightEnd, now: float, keep_days: float, last: set[int], held: dict[int, str]
) -> str | None:
    """Why a flight's logs and artifacts may go, or None when they stay."""
    if end.finished is None or end.flight in held or end.flight in last:
        return None
    age = now - end.finished
    if age <= keep_days * DAY_S:
        return None
    return f"finished {age / DAY_S:.1f} days ago, not one of the last flights of {end.branch}"


def _work_goes(job: dbr.JobEnd | None, now: float, failed_days: float) -> str | None:
    """Why a job's work dir may go, or None when it stays (unknown or unfinished job)."""
    if job is None or not job.final:
        return None
    if job.status == Status.PASS:
        return "job passed"
    if job.finished is not None and now - job.finished > failed_days * DAY_S:
        return f"job {job.status} {(now - job.finished) / DAY_S:.1f} days ago"
    return None


# --- measuring and deleting, never through a symlink ------------------------------------


@contextmanager
def _opened(root: os.PathLike[str], parts: tuple[str, ...]) -> Iterator[int]:
    """A descriptor of root/parts..., each part opened below the last without following a
    link (OSError ELOOP/ENOTDIR when one is a link)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for p in parts:
            if not paths.plain_name(p):
                raise ValueError(f"not a plain name: {p!r}")
            nfd = os.open(p, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
        yield fd
    finally:
        os.close(fd)


def _walk(dfd: int, delete: bool) -> int:
    """Bytes on disk below the dir `dfd`; with delete, its contents are removed too."""
    total = 0
    if delete:
        mode = os.fstat(dfd).st_mode
        if mode & 0o700 != 0o700:  # a job made it read-only: we own it, so we may
            os.fchmod(dfd, stat.S_IMODE(mode) | 0o700)
    with os.scandir(dfd) as it:
        entries = list(it)
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        total += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(e.name, _DIR, dir_fd=dfd)
            except PermissionError:
                if not delete:
                    continue
                os.chmod(e.name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dfd)
                sub = os.open(e.name, _DIR, dir_fd=dfd)
            try:
                total += _walk(sub, delete)
            finally:
                os.close(sub)
            if delete:
                os.rmdir(e.name, dir_fd=dfd)
        elif delete:
            os.unlink(e.name, dir_fd=dfd)  # a symlink goes as a link, never followed
    return total


def _remove(root: os.PathLike[str], parts: tuple[str, ...], delete: bool) -> int:
    """Measure (and delete) root/parts; its parents are opened without following links."""
    *parents, name = parts
    with _opened(root, tuple(parents)) as pfd:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return 0
        if not stat.S_ISDIR(st.st_mode):
            if delete:
                os.unlink(name, dir_fd=pfd)
            return int(st.st_blocks) * 512
        fd = os.open(name, _DIR, dir_fd=pfd)
        try:
            total = _walk(fd, delete) + st.st_blocks * 512
        finally:
            os.close(fd)
        if delete:
            os.rmdir(name, dir_fd=pfd)
        return int(total)


def _rmdir_if_empty(root: os.PathLike[str], name: str) -> None:
    with _opened(root, ()) as rfd:
        try:
            os.rmdir(name, dir_fd=rfd)
        except OSError:
            pass  # not empty (a kept job's dir), or gone


def run_gc(
    db: Database, loaded: Loaded, *, dry_run: bool = False, now: float | None = None
) -> GcResult:
    """Apply retention: plan, then measure (dry run) or delete each dir, recording each
    deletion in the gc journal."""
    res = plan_gc(db, loaded, now)
    res.dry_run = dry_run
    roots = paths.flight_roots(loaded)
    journal = paths.gc_journal(loaded)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = []
    for d in res.items:
        try:
            d.bytes = _remove(roots[d.kind], d.parts, delete=not dry_run)
        except (OSError, ValueError) as e:
            d.error = str(e)
            log.warning("gc: %s: %s", d.label(), e)
            continue
        if not dry_run:
            lines.append(f"{stamp} deleted {d.label()} {d.bytes} bytes: {d.why}\n")
    if not dry_run:
        for kind in ("work", "artifacts"):
            for f in sorted({d.flight for d in res.items if d.kind == kind and not d.error}):
                _rmdir_if_empty(roots[kind], str(f))
        if lines:
            journal.parent.mkdir(parents=True, exist_ok=True)
            with open(journal, "a", encoding="utf-8") as out:
                out.writelines(lines)
    return res


def daily_gc(db: Database, loaded: Loaded, due: float, now: float | None = None) -> float:
    """The daemon's retention: run gc when `due` has come; when it is due next."""
    now = time.time() if now is None else now
    every = loaded.cfg.retention.interval_h * 3600.0
    if every <= 0:
        return float("inf")
    if now < due:
        return due
    try:
        res = run_gc(db, loaded, now=now)
        log.info("gc: %s", res.summary())
    except OSError as e:
        log.warning("gc failed: %s", e)
    return now + every
