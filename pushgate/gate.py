"""The push gate: decide whether a flight's tested revision is pushed, and push it.

The decision (osstest §6.1) and the push run under one lock per branch that spans
both (a PostgreSQL advisory lock, or a file lock next to a SQLite database). The
decision is recorded in `pushes` (one row per flight, unique) *before* git runs, as
`pending`; git's answer then completes it. A process killed between the two leaves a
`pending` row that the next run settles by asking the remote where the tested ref is:
already at the target (the push went through), still at the expected old revision
(push again), or elsewhere (someone moved it: refused). So a decision pushes at most
once, and a push is always the compare-and-swap expected_old -> target, fast-forward
only (git.Mirror.push_with_lease).

Block and force (§6.1): a block stops every push; a force pushes whatever the verdict
when a push is wanted; a force to a revision does so only for that revision. `gate
force` clears a block and `gate block` clears a force, so the latest operator action
wins; if both are somehow set, the block wins (the spec's order). Unlike osstest's
`.force` file, a force is used up by the push it causes: a forgotten force would
otherwise push every later regression.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from pushgate.config import Loaded
from pushgate.db import gate as dbg
from pushgate.db.engine import Database
from pushgate.flights import mirror
from pushgate.git import GitError, check_ref
from pushgate.report.text import push_part_text

PAUSE_ENV = "PUSHGATE_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "PUSHGATE_TEST_PAUSE_FILE"

# Push-row statuses that mean the tested ref now holds the target.
PUSHED_STATUSES = frozenset({"pushed", "uptodate"})


def pause_point(stage: str) -> None:
    """Test hook: with PUSHGATE_TEST_PAUSE_AT=<stage>, note the stage in
    $PUSHGATE_TEST_PAUSE_FILE and sleep until killed (so a test can kill -9 the process
    at exactly this point)."""
    if os.environ.get(PAUSE_ENV) != stage:
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        Path(marker).write_text(f"{stage} {os.getpid()}\n")
    while True:
        time.sleep(3600)


# --- locks -------------------------------------------------------------------------------------


class LockBusy(Exception):
    """A lock asked for without waiting is held by another process."""


def _lock_dir(db: Database) -> Path:
    u = make_url(db.url)
    if u.database and u.database != ":memory:":
        return Path(u.database).resolve().parent / "locks"
    return Path("/tmp") / f"pushgate-locks-{os.getuid()}"


@contextmanager
def db_lock(db: Database, name: str, *, wait: bool = True) -> Iterator[None]:
    """An exclusive named lock shared by every process using this database.

    PostgreSQL: a session advisory lock on a connection held for the duration (released by
    the server if the process dies). SQLite: flock on a file beside the database (released
    by the kernel if the process dies).
    """
    if db.dialect == "postgresql":
        key = dbg.lock_key(f"pushgate:{name}")
        conn = db.engine.connect()
        try:
            if not dbg.pg_lock(conn, key, wait=wait):
                raise LockBusy(name)
            conn.commit()
            try:
                yield
            finally:
                dbg.pg_unlock(conn, key)
                conn.commit()
        finally:
            conn.close()
        return
    d = _lock_dir(db)
    d.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    with open(d / f"{safe}.lock", "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(name) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- decision ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    want: bool
    """A push is wanted at all (real flight, normal mode, target != baseline, push on)."""
    push: bool
    kind: str
    """pending (push), not-pushed, up-to-date, not-applicable."""
    why: str


def decide(
    *,
    branch_push: bool,
    mode: str,
    blessing: str,
    target: str,
    expected_old: str | None,
    tolerable: bool,
    state: dbg.GateState,
) -> Decision:
    """osstest §6.1: tolerable -> wantpush; force / force-rev -> wantpush; block -> no."""
    if mode not in ("normal", "up-to-date"):
        return Decision(False, False, "not-applicable", f"{mode} flight")
    if mode == "up-to-date" or target == expected_old:
        return Decision(False, False, "up-to-date", "target is the tested revision")
    if not branch_push:
        return Decision(False, False, "not-applicable", "pushing is off for this branch")
    if not blessing.startswith("real"):
        return Decision(False, False, "not-applicable", f"{blessing} flight")
    push, why = tolerable, ("tolerable" if tolerable else "not tolerable")
    if state.force:
        push, why = True, "forced"
    if state.force_revision and state.force_revision == target:
        push, why = True, f"forced to {target}"
    if state.blocked_why is not None:
        push, why = False, f"blocked: {state.blocked_why}"
    return Decision(True, push, "pending" if push else "not-pushed", why)


# --- pushing -----------------------------------------------------------------------------------


def push_url(loaded: Loaded, tree: str) -> str:
    tc = loaded.trees[tree]
    return tc.push_url or tc.url


def _git_push(db: Database, loaded: Loaded, row: dbg.PushRow) -> tuple[str, str]:
    """Run the compare-and-swap push for a pending row; (status, output)."""
    m = mirror(loaded, row.tree)
    ref = loaded.trees[row.tree].tested_ref
    try:
        res = m.push_with_lease(push_url(loaded, row.tree), ref, row.revision, row.expected_old)
    except GitError as e:
        return "failed", f"{e}\n"
    pause_point("pushed")
    if res.ok:
        return ("uptodate" if res.reason == "up-to-date" else "pushed"), res.output
    return "refused", res.output + f"Push refused ({res.reason}): {ref} was not changed.\n"


def _settle_pending(db: Database, loaded: Loaded, row: dbg.PushRow) -> tuple[str, str]:
    """A push decided by a process that died: find out what happened, finish it."""
    m = mirror(loaded, row.tree)
    ref = loaded.trees[row.tree].tested_ref
    url = push_url(loaded, row.tree)
    try:
        now_at = m.remote_ref(url, ref)
    except GitError as e:
        return "failed", f"{e}\n"
    if now_at == row.revision:
        return "pushed", (
            f"{ref} is at {row.revision}: the push completed before pushgate "
            "was restarted (git's output was lost).\n"
        )
    if now_at == row.expected_old:
        return _git_push(db, loaded, row)
    return "refused", (
        f"{ref} moved to {now_at or '(absent)'} while this push was pending "
        f"(expected {row.expected_old or '(absent)'}); not pushing.\n"
    )


def push_flight(
    db: Database, loaded: Loaded, flight: int, *, tolerable: bool, blessing: str = "real"
) -> dbg.PushRow:
    """Decide and, if so, push the flight's tested revision; idempotent per flight.

    Returns the recorded decision. A flight already decided is returned as it is (a
    pending one is settled first), so calling this again never pushes twice.
    """
    with db.read() as conn:
        cyc = dbg.get_cycle(conn, flight)
    if cyc is None:
        raise ValueError(f"flight {flight} was not made by a gate cycle")
    br = loaded.branch(cyc.branch)
    with db_lock(db, f"gate-{cyc.branch}"):
        with db.read() as conn:
            row = dbg.get_push(conn, flight)
            state = dbg.get_gate(conn, cyc.branch)
        if row is None:
            d = decide(
                branch_push=br.push,
                mode=cyc.mode,
                blessing=blessing,
                target=cyc.target,
                expected_old=cyc.expected_old,
                tolerable=tolerable,
                state=state,
            )
            with db.write() as conn:
                dbg.insert_push(
                    conn,
                    flight=flight,
                    branch=cyc.branch,
                    tree=cyc.tree,
                    revision=cyc.target,
                    expected_old=cyc.expected_old,
                    status=d.kind,
                    output="" if d.push else f"{d.why}\n",
                )
                row = dbg.get_push(conn, flight)
            assert row is not None
            if d.push:
                pause_point("push")
                status, output = _git_push(db, loaded, row)
                _finish(db, row, status, output)
        elif row.status == "pending":
            status, output = _settle_pending(db, loaded, row)
            _finish(db, row, status, output)
        with db.read() as conn:
            final = dbg.get_push(conn, flight)
    assert final is not None
    return final


def _finish(db: Database, row: dbg.PushRow, status: str, output: str) -> None:
    with db.write() as conn:
        dbg.finish_push(conn, row.flight, status, output)
        if status in PUSHED_STATUSES:
            st = dbg.get_gate(conn, row.branch)
            if st.force or st.force_revision:
                dbg.put_gate(conn, dbg.GateState(row.branch, st.blocked_why, False, None))


def push_part(row: dbg.PushRow | None) -> tuple[str, str | None]:
    """(the report's push part §5.9, push state for the subject: `pushed` or None)."""
    if row is None or row.status == "pending":
        return push_part_text("not-pushed"), None
    if row.status in PUSHED_STATUSES:
        return push_part_text("pushed", revision=row.revision, output=row.output), "pushed"
    if row.status in ("refused", "failed"):
        return f"Pushing revision {row.revision}:\n\n{row.output.rstrip()}\n", None
    if row.status == "up-to-date":
        return push_part_text("up-to-date"), None
    if row.status == "not-applicable":
        return push_part_text("not-applicable"), None
    return push_part_text("not-pushed"), None


# --- operator commands -------------------------------------------------------------------------


def block(db: Database, loaded: Loaded, branch: str, why: str) -> dbg.GateState:
    loaded.branch(branch)
    why = " ".join(why.split()) or "blocked"
    with db.write() as conn:
        st = dbg.GateState(branch, why, False, None)
        dbg.put_gate(conn, st)
    return st


def unblock(db: Database, loaded: Loaded, branch: str) -> dbg.GateState:
    loaded.branch(branch)
    with db.write() as conn:
        st = dbg.get_gate(conn, branch)
        st = dbg.GateState(branch, None, st.force, st.force_revision)
        dbg.put_gate(conn, st)
    return st


def force(db: Database, loaded: Loaded, branch: str, rev: str | None = None) -> dbg.GateState:
    """Force the next push decision of the branch (to `rev` only, when given)."""
    br = loaded.branch(branch)
    full = None
    if rev is not None:
        m = mirror(loaded, br.tree)
        m.fetch()
        full = m.resolve(check_ref(rev))
    with db.write() as conn:
        st = dbg.GateState(branch, None, rev is None, full)
        dbg.put_gate(conn, st)
    return st


def gate_state(db: Database, branch: str) -> dbg.GateState:
    with db.read() as conn:
        return dbg.get_gate(conn, branch)
