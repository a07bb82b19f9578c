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

import getpass
import os
from dataclasses import dataclass

from sqlalchemy import Connection

from pushgate.config import Loaded
from pushgate.db import cycles as dbc
from pushgate.db import flights as dbf
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.gate.locks import db_lock, pause_point
from pushgate.git import GitError, check_ref
from pushgate.judge import verdicts
from pushgate.paths import mirror

# Push-row statuses that mean the tested ref now holds the target.
PUSHED_STATUSES = frozenset({"pushed", "uptodate"})


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
    state: dbp.GateState,
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
    return loaded.git_push_url(tree)


def _git_push(db: Database, loaded: Loaded, row: dbp.PushRow) -> tuple[str, str]:
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


def _attempt(db: Database, loaded: Loaded, row: dbp.PushRow) -> tuple[str, str]:
    """Carry out a pending decision; (status, output).

    The remote is asked first where the tested ref is (remote_ref waits for a git push
    still running from an interrupted attempt, so its outcome is seen): already at the
    target is `pushed` (by that attempt, or by someone else: not pushed again); at the
    expected old revision, push; elsewhere, someone moved it: `refused`. A push that did
    not plainly succeed is checked the same way afterwards, so a push that went through
    is never recorded as refused or failed.
    """
    m = mirror(loaded, row.tree)
    ref = loaded.trees[row.tree].tested_ref
    url = push_url(loaded, row.tree)
    try:
        now_at = m.remote_ref(url, ref)
    except GitError as e:
        return "failed", f"{e}\n"
    if now_at == row.revision:
        return "pushed", f"{ref} was already at {row.revision}; not pushed again.\n"
    if now_at != row.expected_old:
        return "refused", (
            f"{ref} is at {now_at or '(absent)'}, not at the expected "
            f"{row.expected_old or '(absent)'}: someone else moved it.\n"
            f"Push refused (stale): {ref} was not changed.\n"
        )
    status, output = _git_push(db, loaded, row)
    if status in PUSHED_STATUSES:
        return status, output
    try:
        now_at = m.remote_ref(url, ref)
    except GitError:
        return status, output
    if now_at == row.revision:
        return "pushed", output + f"{ref} is at {row.revision} all the same: it was pushed.\n"
    return status, output


def untested_build(conn: Connection, flights: list[int], tree: str, target: str) -> str | None:
    """Why a job of `flights` was not built from `target` of `tree`, or None if none is.

    Each job is followed through its buildjobs (in any flight, as a retest reuses its
    parent's builds): a `revision_<tree>` or `built_revision_<tree>` runvar of the job or
    of a build it used that differs from target means the jobs tested something else.
    """
    names = (f"revision_{tree}", f"built_revision_{tree}")
    runvars: dict[int, dict[str, dict[str, str]]] = {}
    deps: dict[int, dict[str, list[tuple[str, int, str]]]] = {}

    def load(f: int) -> None:
        if f not in runvars:
            runvars[f] = {j.job: j.runvars for j in dbf.get_jobs(conn, f)}
            deps[f] = dbf.job_deps_of(conn, f)

    for f in flights:
        info = dbf.get_flight(conn, f)
        if info is not None and info.revisions.get(tree, target) != target:
            return f"flight {f} tested {tree} {info.revisions[tree]}, not {target}"
    for f in flights:
        load(f)
        for job in runvars[f]:
            todo, seen = [(f, job)], set()
            while todo:
                key = todo.pop()
                if key in seen:
                    continue
                seen.add(key)
                kf, kj = key
                load(kf)
                for name in names:
                    value = runvars[kf].get(kj, {}).get(name)
                    if value is not None and value != target:
                        via = "" if key == (f, job) else f" (its build {kf}.{kj})"
                        return f"job {f}.{job}{via} has {name}={value}, not {target}"
                todo += [(df, dj) for _, df, dj in deps[kf].get(kj, [])]
    return None


def _decide_cycle(
    db: Database,
    branch_push: bool,
    cyc: dbc.CycleRow,
    blessing: str,
    tolerable: bool,
    state: dbp.GateState,
) -> Decision:
    """The decision for a gate cycle's flight: §6.1, then only what was tested."""
    d = decide(
        branch_push=branch_push,
        mode=cyc.mode,
        blessing=blessing,
        target=cyc.target,
        expected_old=cyc.expected_old,
        tolerable=tolerable,
        state=state,
    )
    return _only_tested(db, cyc, d)


def _only_tested(db: Database, cyc: dbc.CycleRow, d: Decision) -> Decision:
    """Invariant 1: only the tested tuple is pushed, whatever the verdict or a force."""
    if not d.push:
        return d
    flights = [cyc.flight] + ([cyc.retest_flight] if cyc.retest_flight else [])
    with db.read() as conn:
        untested = untested_build(conn, flights, cyc.tree, cyc.target)
    if untested is not None:
        return Decision(True, False, "refused", f"untested build, not pushing: {untested}")
    return d


def push_flight(
    db: Database, loaded: Loaded, flight: int, *, tolerable: bool, blessing: str = "real"
) -> dbp.PushRow:
    """Decide and, if so, push the flight's tested revision; idempotent per flight.

    Returns the recorded decision. A flight already decided is returned as it is (a
    pending one is settled first), so calling this again never pushes twice.
    """
    with db.read() as conn:
        cyc = dbc.get_cycle(conn, flight)
    if cyc is None:
        raise ValueError(f"flight {flight} was not made by a gate cycle")
    br = loaded.branch(cyc.branch)
    with db_lock(db, f"gate-{cyc.branch}") as held:
        with db.read() as conn:
            row = dbp.get_push(conn, flight)
            state = dbp.get_gate(conn, cyc.branch)
        if row is None:
            d = _decide_cycle(db, br.push, cyc, blessing, tolerable, state)
            with db.write() as conn:
                dbp.insert_push(
                    conn,
                    flight=flight,
                    branch=cyc.branch,
                    tree=cyc.tree,
                    revision=cyc.target,
                    expected_old=cyc.expected_old,
                    status=d.kind,
                    output="" if d.push else f"{d.why}\n",
                    why=d.why,
                    decided_by=state.by if d.why.startswith(("blocked", "forced")) else None,
                )
                row = dbp.get_push(conn, flight)
            assert row is not None
            if d.push:
                pause_point("push")
                held.check()  # the row stays pending: settled by the next cycle
                _finish(db, row, *_attempt(db, loaded, row))
        elif row.status == "pending":
            held.check()
            _finish(db, row, *_attempt(db, loaded, row))
        with db.read() as conn:
            final = dbp.get_push(conn, flight)
    assert final is not None
    return final


def _finish(db: Database, row: dbp.PushRow, status: str, output: str) -> None:
    """Record the outcome of an attempt after the text of earlier ones (a retried push)."""
    with db.write() as conn:
        dbp.finish_push(conn, row.flight, status, row.output + output)
        if status in PUSHED_STATUSES:
            st = dbp.get_gate(conn, row.branch)
            if st.force or st.force_revision:
                dbp.put_gate(conn, dbp.GateState(row.branch, st.blocked_why, False, None))


# --- a decision carried out later, without a new flight --------------------------------------


@dataclass(frozen=True)
class Retry:
    row: dbp.PushRow
    decision: Decision
    decided_by: str | None
    note: str
    """Said in the push's output before the new attempt."""


def retry_due(db: Database, loaded: Loaded, branch: str) -> Retry | None:
    """The branch's last push decision, if it is to be carried out now without a new
    flight: its push failed (the remote was unreachable...), or a block held it back and
    is gone while the flight's stored verdict is tolerable.

    Only the decision of the branch's newest cycle, once that cycle is done: a newer
    flight supersedes it. Never while a block stands. The push is still the
    compare-and-swap from the cycle's expected old revision to its exact tested target,
    and a decision moves the tested ref at most once (its row goes back to `pending`
    only from a status that did not move it).
    """
    br = loaded.branch(branch)
    with db.read() as conn:
        cyc = dbc.latest_cycle(conn, branch)
        if cyc is None or cyc.stage != "done" or cyc.mode != "normal":
            return None
        row = dbp.get_push(conn, cyc.flight)
        state = dbp.get_gate(conn, branch)
        blessing = dbf.bless_as(conn, cyc.flight)
    if row is None or state.blocked_why is not None:
        return None
    if row.status == "failed":
        d = Decision(True, True, "pending", row.why or "tolerable")
        return Retry(row, d, row.decided_by, "Pushing again:\n")
    if row.status != "not-pushed" or not (row.why or "").startswith("blocked"):
        return None
    vd = verdicts.stored(db, cyc.flight)
    if vd is None or not vd.classification.tolerable:
        return None
    d = _decide_cycle(db, br.push, cyc, blessing, True, state)
    if not d.push:
        return None
    by = state.by if d.why.startswith("forced") else None
    return Retry(row, d, by, f"No longer blocked; pushing ({d.why}):\n")


def retry_push(db: Database, loaded: Loaded, branch: str) -> dbp.PushRow | None:
    """Carry out the decision retry_due finds, under the gate lock; the row as it ends, or
    None when there was none."""
    with db_lock(db, f"gate-{branch}") as held:
        r = retry_due(db, loaded, branch)
        if r is None:
            return None
        held.check()
        with db.write() as conn:
            if not dbp.repend_push(
                conn,
                r.row.flight,
                from_status=r.row.status,
                why=r.decision.why,
                decided_by=r.decided_by,
                note=r.note,
            ):
                return None
            row = dbp.get_push(conn, r.row.flight)
        assert row is not None
        pause_point("push")
        _finish(db, row, *_attempt(db, loaded, row))
        with db.read() as conn:
            return dbp.get_push(conn, row.flight)


def push_line(row: dbp.PushRow) -> str:
    """The decision in one line, for a terminal: its status, why, and for a refused or
    failed push git's (or the gate's) last word."""
    parts = [row.status]
    if row.why and row.status not in PUSHED_STATUSES:
        why = row.why
        if why.startswith("blocked") and row.decided_by:
            why = why.replace("blocked", f"blocked by {row.decided_by}", 1)
        parts.append(f"({why})")
    if row.status in ("refused", "failed"):
        lines = [x.strip() for x in row.output.splitlines() if x.strip()]
        said = [x for x in lines if x.startswith(("!", "error:", "remote:", "fatal:"))][:3]
        said = said or lines[:1]
        said += [x for x in lines[-1:] if x not in said]
        if said:
            parts.append("- " + "; ".join(said))
        if row.status == "failed":
            parts.append("(tried again next cycle)")
    return " ".join(parts)


# --- operator commands -------------------------------------------------------------------------


def operator() -> str:
    """Who runs this command, for the record of a block or force."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def block(
    db: Database, loaded: Loaded, branch: str, why: str, by: str | None = None
) -> dbp.GateState:
    loaded.branch(branch)
    why = " ".join(why.split()) or "blocked"
    with db.write() as conn:
        st = dbp.GateState(branch, why, False, None, by or operator())
        dbp.put_gate(conn, st)
    return st


def unblock(db: Database, loaded: Loaded, branch: str) -> dbp.GateState:
    loaded.branch(branch)
    with db.write() as conn:
        st = dbp.get_gate(conn, branch)
        by = st.by if st.force or st.force_revision else None  # the forcer's, if any
        st = dbp.GateState(branch, None, st.force, st.force_revision, by)
        dbp.put_gate(conn, st)
    return st


def force(
    db: Database, loaded: Loaded, branch: str, rev: str | None = None, by: str | None = None
) -> dbp.GateState:
    """Force the next push decision of the branch (to `rev` only, when given)."""
    br = loaded.branch(branch)
    full = None
    if rev is not None:
        m = mirror(loaded, br.tree)
        m.fetch()
        full = m.resolve(check_ref(rev))
    with db.write() as conn:
        st = dbp.GateState(branch, None, rev is None, full, by or operator())
        dbp.put_gate(conn, st)
    return st


def gate_state(db: Database, branch: str) -> dbp.GateState:
    with db.read() as conn:
        return dbp.get_gate(conn, branch)
