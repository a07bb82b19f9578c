"""History queries: the built tuple and the batched lookups the classifier makes."""

from __future__ import annotations

from sqlalchemy import select

from pushgate.db import history
from pushgate.db.engine import Database
from pushgate.db.schema import flight_built
from tests.historybuilder import History

BR = "xen-unstable"
A = "a" * 40
B = "b" * 40


def test_built_tuple_follows_deps_across_flights_and_ignores_prev(db: Database) -> None:
    h = History(db)
    f1 = h.flight(BR, revs={"xen": A, "qemuu": B})
    f1.job("build-amd64", steps=[("xen-build", "pass")])
    f1.job("build-amd64-prev", steps=[("xen-build", "pass")], built={"xen": "0" * 40})
    n1 = h.finish(f1)
    f2 = h.flight(BR, revs={"xen": A, "linux": "1" * 40})
    f2.job("build-amd64-pvops", steps=[("kernel-build", "pass")], built={"linux": "1" * 40})
    f2.job(
        "test-x",
        deps={"buildjob": f"{n1}.build-amd64", "kernbuildjob": "build-amd64-pvops"},
        built={},
        steps=[("build-check(1)", "pass")],
    )
    n2 = h.finish(f2)
    with db.read() as conn:
        rows = conn.execute(
            select(flight_built.c.tree, flight_built.c.revision).where(flight_built.c.flight == n2)
        ).all()
    assert sorted(rows) == [("linux", "1" * 40), ("qemuu", B), ("xen", A)]


def test_mismatch_is_null_and_hg_prefix_is_stripped(db: Database) -> None:
    h = History(db)
    f = h.flight(BR, revs={"xen": A})
    f.job("build-amd64", steps=[("xen-build", "pass")])
    f.job("build-i386", steps=[("xen-build", "pass")], built={"xen": B})
    f.job("build-armhf", steps=[("b", "pass")], built={"qemu": "123:" + B})
    n = h.finish(f)
    with db.write() as conn:
        assert history.compute_flight_built(conn, n) == {"xen": None, "qemu": B}
        # Recomputing replaces the rows.
        assert history.compute_flight_built(conn, n) == {"xen": None, "qemu": B}
        assert history.flights_with_built(conn, {"xen": A}, [BR], ["real"]) == []
        assert [c.flight for c in history.flights_with_built(conn, {"qemu": B}, [BR], ["real"])]


def _simple(h: History, rev: str, blessing: str, gs: str, branch: str = BR) -> int:
    f = h.flight(branch, revs={"xen": rev}, blessing=blessing)
    f.job("build-amd64", steps=[("xen-build", "pass")])
    f.job(
        "test-x",
        deps={"buildjob": "build-amd64"},
        steps=[("build-check(1)", "pass"), ("guest-start", gs), ("guest-start", "pass")],
    )
    return h.finish(f)


def test_candidates_order_limit_and_filters(db: Database) -> None:
    h = History(db)
    n1 = _simple(h, A, "real", "pass")
    n2 = _simple(h, A, "real-retest", "pass")
    n3 = _simple(h, A, "real", "fail")
    n4 = _simple(h, A, "real-bisect", "pass")
    _simple(h, A, "play", "pass")
    _simple(h, A, "real", "pass", branch="other")
    _simple(h, B, "real", "pass")
    blessings = ["real", "real-retest", "real-bisect"]
    with db.read() as conn:
        got = history.flights_with_built(conn, {"xen": A}, [BR], blessings)
        assert [(c.flight, c.blessing) for c in got] == [
            (n3, "real"),
            (n1, "real"),
            (n4, "real-bisect"),
            (n2, "real-retest"),
        ]
        got = history.flights_with_built(conn, {"xen": A}, [BR], blessings, exclude=[n3], limit=2)
        assert [c.flight for c in got] == [n4, n2]  # the 2 newest, then blessing order
        assert history.flights_with_built(conn, {}, [BR], blessings) == []
        both = history.flights_with_built(conn, {"xen": A}, [BR, "other"], ["real"])
        assert len(both) == 3
        # The same testid twice in a job: the lowest step number speaks.
        st = history.step_statuses(conn, [n1, n3], [("test-x", "guest-start")])
        assert st == {(n1, "test-x", "guest-start"): "pass", (n3, "test-x", "guest-start"): "fail"}
        assert history.jobs_present(conn, [n1, n3], ["test-x", "nope"]) == {
            (n1, "test-x"),
            (n3, "test-x"),
        }


def test_never_passed_batch(db: Database) -> None:
    h = History(db)
    _simple(h, A, "real", "fail")
    _simple(h, A, "play", "pass")
    pairs = [("test-x", "guest-start"), ("test-x", "nope"), ("build-amd64", "xen-build")]
    many = [("test-x", f"t{i}") for i in range(250)]  # crosses the 200-probe chunk
    with db.read() as conn:
        # guest-start passed as step 3 (same testid twice), so only "nope" never passed.
        assert history.never_passed(conn, pairs, [BR], ["real"]) == {("test-x", "nope")}
        assert history.never_passed(conn, pairs, ["other"], ["real"]) == set(pairs)
        assert history.never_passed(conn, many, [BR], ["real"]) == set(many)
        assert history.never_passed(conn, [], [BR], ["real"]) == set()


def test_failing_steps_estimates_and_tuples(db: Database) -> None:
    h = History(db)
    f = h.flight(BR, revs={"xen": A}, baseline={"xen": B})
    f.job("build-amd64", steps=[("hosts-allocate", "pass"), ("xen-build", "pass")], duration=100)
    f.job("test-x", steps=[("a", "pass"), ("b", "skip"), ("c", "fail")], duration=30)
    n = h.finish(f)
    g = h.flight(BR, revs={"xen": A}, baseline={"xen": B})
    g.job("build-amd64", steps=[("xen-build", "pass")])
    m = h.finish(g)
    with db.read() as conn:
        assert [(s.job, s.stepno, s.status) for s in history.failing_steps(conn, n)] == [
            ("test-x", 3, "fail")
        ]
        row = history.flight_row(conn, m)
        assert row is not None
        est = history.duration_estimates(conn, row, ["build-amd64", "test-x", "x"], ["real"])
        assert est == {"build-amd64": 100.0, "test-x": 30.0}
        assert history.flight_tuples(conn, n) == [("xen", A, B)]
        assert history.job_statuses(conn, n) == {"build-amd64": "pass", "test-x": "fail"}
        assert history.flight_row(conn, 99999) is None
