"""The farm as an operator sees it: hosts with their state, health and jobs, a person's
hold of a host, a host's history, and the queue with an estimate of when each job runs."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from pushgate.db import farm as dbfarm
from pushgate.db import hosts as dbh
from pushgate.db.engine import Database
from pushgate.errors import PushgateError


class FarmError(PushgateError):
    pass


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d`, `1h30m` or plain seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        secs = float(t)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise FarmError(f"duration {text!r}: a number of seconds or e.g. 90s, 30m, 2h, 1d")
        secs = sum(float(n) * _UNITS[u] for n, u in parts)
    if secs <= 0:
        raise FarmError(f"duration {text!r} must be positive")
    return secs


@dataclass(frozen=True)
class HostView:
    host: str
    executor: str
    slots: int
    flags: tuple[str, ...]
    # idle | allocated (jobs on it) | held (a person's, until) | reserved (held, jobs ending)
    state: str
    health: str
    health_why: str | None
    held_by: str | None
    held_until: float | None
    current: tuple[str, ...]
    last: tuple[str, ...]


def hosts_overview(db: Database, last: int = 3) -> list[HostView]:
    now = time.time()
    with db.read() as conn:
        rows = dbh.list_hosts(conn)
        cur = dbh.current_allocations(conn)
        hist = {h.host: dbh.allocations(conn, h.host, limit=last + len(h.flags) + 8) for h in rows}
    on: dict[str, list[str]] = {}
    for a in cur:
        on.setdefault(a.host, []).append(f"{a.flight}.{a.job}")
    out = []
    for h in rows:
        jobs = tuple(on.get(h.host, []))
        held = h.held_until is not None and h.held_until >= now
        state = ("reserved" if jobs else "held") if held else ("allocated" if jobs else "idle")
        done = [f"{a.flight}.{a.job}" for a in hist[h.host] if a.released is not None]
        out.append(
            HostView(
                h.host,
                h.executor,
                h.slots,
                tuple(sorted(h.flags)),
                state,
                h.health,
                h.health_why,
                h.held_by if held else None,
                h.held_until if held else None,
                jobs,
                tuple(done[:last]),
            )
        )
    return out


def set_health(
    db: Database, host: str, health: str, why: str, by: str, *, check: bool = False
) -> None:
    """A person sets a host's health. `check` (a health-check job is configured): a host
    set `unknown` takes no job but the health check until that passes on it."""
    if health not in dbh.HEALTHS:
        raise FarmError(f"health {health!r}: one of {', '.join(dbh.HEALTHS)}")
    with db.write() as conn:
        if not dbh.set_health(conn, host, health, why, by, check=check and health == "unknown"):
            raise FarmError(f"no host {host!r} (hosts are made from the config by a run)")


def allocate(db: Database, flags: str, seconds: float, by: str, why: str) -> dbh.Hold:
    want = frozenset(f for f in flags.split(",") if f.strip())
    with db.write() as conn:
        hold = dbh.hold_host(conn, want, time.time() + seconds, by, why)
    if hold is None:
        raise FarmError(f"no healthy host that is not held has flags {','.join(sorted(want))}")
    return hold


def release(db: Database, host: str, by: str) -> None:
    with db.write() as conn:
        if not dbh.release_hold(conn, host, by):
            raise FarmError(f"host {host!r} is not held")


@dataclass(frozen=True)
class HistoryLine:
    at: float
    text: str


def host_history(db: Database, host: str, limit: int = 200) -> list[HistoryLine]:
    """A host's jobs (allocated, released) and events (health, holds), newest first."""
    with db.read() as conn:
        if host not in {h.host for h in dbh.list_hosts(conn)}:
            raise FarmError(f"no host {host!r}")
        allocs = dbh.allocations(conn, host, limit=limit)
        events = dbh.host_events_of(conn, host, limit=limit)
    lines = []
    for a in allocs:
        took = f"{a.released - a.allocated:.1f}s" if a.released is not None else "holding"
        lines.append(
            HistoryLine(
                a.allocated, f"job {a.flight}.{a.job} attempt {a.attempt} slot {a.slot} {took}"
            )
        )
    for e in events:
        lines.append(HistoryLine(e.at, f"{e.kind} {e.value} by {e.by}: {e.why}"))
    return sorted(lines, key=lambda x: -x.at)[:limit]


@dataclass(frozen=True)
class QueueLine:
    flight: int
    job: str
    flags: tuple[str, ...]
    pinned: str | None
    priority: int
    since: float
    # "builds" (waits for its builds), "host" (waits for a host)
    waits_for: str
    typical_s: float | None
    # When it should start (epoch s), from the running jobs' typical durations; None:
    # no estimate (no eligible host, or no history).
    eta: float | None


def queue(db: Database) -> list[QueueLine]:
    now = time.time()
    with db.read() as conn:
        rows = dbfarm.queued_jobs(conn)
        hosts = dbh.list_hosts(conn)
        free = dbh.free_slots(conn, now)
        ends = dbfarm.running_ends(conn)
    # A simple projection: each host's slots free up at its jobs' expected ends; jobs
    # take, in queue order, the earliest slot of a host that has their flags.
    slots: dict[str, list[float]] = {}
    for h in hosts:
        if h.host in free:
            slots[h.host] = sorted(
                [now] * free[h.host] + [max(now, t) for t in ends.get(h.host, [])]
            )
    out = []
    for q in rows:
        eta: float | None = None
        if not q.waiting_for_builds:
            cands = [
                h.host
                for h in hosts
                if frozenset(q.flags) <= h.flags
                and (q.pinned is None or h.host == q.pinned)
                and slots.get(h.host)
            ]
            if cands:
                best = min(cands, key=lambda c: slots[c][0])
                eta = slots[best][0]
                slots[best][0] = eta + (q.typical_s or 0.0)
                slots[best].sort()
        out.append(
            QueueLine(
                q.flight,
                q.job,
                q.flags,
                q.pinned,
                q.priority,
                q.since,
                "builds" if q.waiting_for_builds else "host",
                q.typical_s,
                eta,
            )
        )
    return out


def workers(db: Database, all_: bool = False) -> list[dbfarm.WorkerRow]:
    with db.read() as conn:
        return dbfarm.list_workers(conn, all_=all_)
