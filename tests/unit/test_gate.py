"""The push decision, the compare-and-swap push recorded once per flight, pending-push
recovery, the gate lock, block/force (real git repositories, SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pushgate.config import Loaded
from pushgate.db import pushes as dbp
from pushgate.db.engine import Database
from pushgate.gate.locks import LockBusy, db_lock
from pushgate.gate.push import block, decide, force, gate_state, push_flight, unblock
from pushgate.publish.report import push_part
from tests.gateproject import GateProject, cycle_flight, make_gate_project

FREE = dbp.GateState("app")


@pytest.mark.parametrize(
    ("kw", "state", "push", "kind"),
    [
        ({}, FREE, True, "pending"),
        ({"tolerable": False}, FREE, False, "not-pushed"),
        ({"tolerable": False}, dbp.GateState("app", force=True), True, "pending"),
        ({"tolerable": False}, dbp.GateState("app", force_revision="b" * 40), True, "pending"),
        ({"tolerable": False}, dbp.GateState("app", force_revision="c" * 40), False, "not-pushed"),
        ({}, dbp.GateState("app", blocked_why="freeze"), False, "not-pushed"),
        ({}, dbp.GateState("app", blocked_why="freeze", force=True), False, "not-pushed"),
        ({"target": "a" * 40}, dbp.GateState("app", force=True), False, "up-to-date"),
        ({"mode": "baseline-test"}, dbp.GateState("app", force=True), False, "not-applicable"),
        ({"branch_push": False}, FREE, False, "not-applicable"),
        ({"blessing": "play"}, FREE, False, "not-applicable"),
    ],
)
def test_decision_rule(kw: dict[str, object], state: dbp.GateState, push: bool, kind: str) -> None:
    args: dict[str, object] = dict(
        branch_push=True,
        mode="normal",
        blessing="real",
        target="b" * 40,
        expected_old="a" * 40,
        tolerable=True,
    )
    args.update(kw)
    d = decide(state=state, **args)  # type: ignore[arg-type]
    assert (d.push, d.kind) == (push, kind)
    assert d.want == (kind in ("pending", "not-pushed"))


def _cycle_flight(db: Database, loaded: Loaded, target: str, expected_old: str | None) -> int:
    """A finished flight of the gate (no jobs needed to exercise the push)."""
    return cycle_flight(db, target, expected_old)


@pytest.fixture
def proj(tmp_path: Path) -> GateProject:
    return make_gate_project(tmp_path / "p")


def _fetch(p: GateProject, loaded: Loaded) -> None:
    from pushgate.paths import mirror

    m = mirror(loaded, "app")
    m.fetch()


def test_push_moves_ref_once_per_decision(db: Database, proj: GateProject) -> None:
    loaded = proj.load()
    c1 = proj.commit("one")
    _fetch(proj, loaded)
    f = _cycle_flight(db, loaded, c1, None)
    row = push_flight(db, loaded, f, tolerable=True)
    assert row.status == "pushed" and proj.tested() == c1
    assert "[new branch]" in row.output
    text, state = push_part(row)
    assert state == "pushed" and text.startswith(f"Pushing revision {c1}:\n\n")
    # Someone resets the ref; the same decision never pushes again.
    c2 = proj.commit("two")
    proj.set_tested(c2)
    again = push_flight(db, loaded, f, tolerable=True)
    assert again == row and proj.tested() == c2


def test_moved_tested_ref_is_refused_not_overwritten(db: Database, proj: GateProject) -> None:
    loaded = proj.load()
    c1 = proj.commit("one")
    proj.set_tested(c1)
    c2 = proj.commit("two")
    c3 = proj.commit("three")
    _fetch(proj, loaded)
    f = _cycle_flight(db, loaded, c2, c1)
    proj.set_tested(c3)  # someone else pushed meanwhile
    row = push_flight(db, loaded, f, tolerable=True)
    assert row.status == "refused" and proj.tested() == c3
    assert "Push refused (stale)" in row.output
    text, state = push_part(row)
    assert state is None and "Push refused" in text


def test_non_fast_forward_is_refused(db: Database, proj: GateProject) -> None:
    loaded = proj.load()
    c1 = proj.commit("one")
    c2 = proj.commit("two")
    proj.set_tested(c2)
    proj.work.branch("side", at=c1)
    side = proj.work.commit("side", files={"s": "1\n"})
    proj.work.push(proj.bare, "HEAD:refs/heads/side")
    _fetch(proj, loaded)
    f = _cycle_flight(db, loaded, side, c2)
    row = push_flight(db, loaded, f, tolerable=True)
    assert row.status == "refused" and "not a fast-forward" in row.output
    assert proj.tested() == c2


@pytest.mark.parametrize("remote", ["target", "expected", "elsewhere"])
def test_pending_push_is_settled_from_the_remote(
    db: Database, proj: GateProject, remote: str
) -> None:
    """A process died between recording the decision and recording git's answer."""
    loaded = proj.load()
    c1 = proj.commit("one")
    c2 = proj.commit("two")
    c3 = proj.commit("three")
    _fetch(proj, loaded)
    f = _cycle_flight(db, loaded, c2, c1)
    proj.set_tested({"target": c2, "expected": c1, "elsewhere": c3}[remote])
    with db.write() as conn:
        dbp.insert_push(
            conn, flight=f, branch="app", tree="app", revision=c2, expected_old=c1, status="pending"
        )
    row = push_flight(db, loaded, f, tolerable=False)  # the verdict is not asked again
    want = {"target": ("pushed", c2), "expected": ("pushed", c2), "elsewhere": ("refused", c3)}
    assert (row.status, proj.tested()) == want[remote]


def test_concurrent_decisions_push_once(db: Database, proj: GateProject) -> None:
    loaded = proj.load()
    c1 = proj.commit("one")
    _fetch(proj, loaded)
    f = _cycle_flight(db, loaded, c1, None)
    rows: list[dbp.PushRow] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            rows.append(push_flight(db, loaded, f, tolerable=True))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({(r.status, r.output, r.created) for r in rows}) == 1
    with db.read() as conn:
        assert [r.status for r in dbp.pushes_of(conn, "app")] == ["pushed"]


def test_gate_lock_is_exclusive(db: Database) -> None:
    got: list[str] = []
    with db_lock(db, "gate-x"):

        def other() -> None:
            try:
                with db_lock(db, "gate-x", wait=False):
                    got.append("acquired")
            except LockBusy:
                got.append("busy")
            with db_lock(db, "gate-y", wait=False):
                got.append("other name")

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert got == ["busy", "other name"]
    with db_lock(db, "gate-x", wait=False):
        pass


def test_block_force_unblock(db: Database, proj: GateProject) -> None:
    loaded = proj.load()
    c1 = proj.commit("one")
    st = block(db, loaded, "app", "  release\nfreeze ")
    assert st.blocked_why == "release freeze"
    st = force(db, loaded, "app", rev=c1[:10])
    assert st.blocked_why is None and st.force_revision == c1 and not st.force
    assert gate_state(db, "app") == st
    block(db, loaded, "app", "again")
    assert gate_state(db, "app").force_revision is None  # a block clears a force
    force(db, loaded, "app")
    block(db, loaded, "app", "x")
    assert unblock(db, loaded, "app") == dbp.GateState("app")
    with pytest.raises(Exception, match="no such branch"):
        block(db, loaded, "nope", "x")
