"""The classifier against histories built in the database (spec/osstest-semantics.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pushgate.db.engine import Database
from pushgate.judge.classify import AllowPatternError, classify, parse_allow
from pushgate.judge.verdict import Classification, Failure
from tests.historybuilder import History, StepSpec

BR = "xen-unstable"
BASE = "b" * 40
TGT = "c" * 40
THIS = {"xen": TGT}
THAT = {"xen": BASE}
OK = [("host-install(3)", "pass"), ("xen-boot", "pass"), ("guest-start", "pass")]


def fl(
    h: History,
    rev: str,
    tests: dict[str, Sequence[StepSpec]],
    *,
    blessing: str = "real",
    build: str = "pass",
    branch: str = BR,
    builds: dict[str, str] | None = None,
) -> int:
    """A flight: build-amd64 (its xen-build step `build`) and test jobs depending on it."""
    f = h.flight(branch, revs={"xen": rev}, blessing=blessing, baseline={"xen": BASE})
    for name, bst in (builds or {"build-amd64": build}).items():
        f.job(name, steps=[("hosts-allocate", "pass"), ("xen-build", bst)])
    for job, steps in tests.items():
        check = "pass" if build == "pass" else "blocked"
        full: list[StepSpec] = [("build-check(1)", check)]
        if check == "pass":
            full += list(steps)
        f.job(job, deps={"buildjob": "build-amd64"}, steps=full)
    return h.finish(f)


def line(f: Failure) -> str:
    parts = [f.job, "" if f.stepno is None else str(f.stepno), f.testid, f.status, f.annotation]
    return " ".join(p for p in parts if p)


def lines(c: Classification) -> list[tuple[str, str]]:
    return [(f.category, line(f)) for f in c.failures]


def cls(db: Database, flight: int, **kw: object) -> Classification:
    kw.setdefault("this", THIS)
    kw.setdefault("that", THAT)
    return classify(db, flight, **kw)  # type: ignore[arg-type]


FAIL_GS = [("host-install(3)", "pass"), ("xen-boot", "pass"), ("guest-start", "fail")]


def test_perfect(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": OK})
    c = cls(db, b)
    assert (c.outcome, c.verdict, c.subject_prefix) == ("all pass", "Perfect :-)", "")
    assert c.failures == [] and not c.blocking and c.perfect and c.tolerable
    assert c.mro[:1] == [f"flight {b}"] and "perfect" in c.mro and "tolerable" in c.mro
    assert f"version this xen {TGT}" in c.mro and f"version that xen {BASE}" in c.mro


def test_regression_vs_newest_baseline_pass(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK})
    a2 = fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": FAIL_GS})
    c = cls(db, b)
    assert lines(c) == [("A regression", f"test-x 4 guest-start fail REGR. vs. {a2}")]
    f = c.failures[0]
    assert f.blocker == "regression" and f.regression_vs == a2 and f.reference_flight == a2
    assert (c.verdict, c.subject_prefix, c.outcome) == ("Regressions :-(", "regressions - ", "FAIL")
    assert f"regression test-x guest-start {a2}" in c.mro and "tolerable" not in c.mro
    assert c.blocking and c.reasons and c.comparison_flights[-1] == a2


def test_like_beats_regression_and_names_newest_identical_failure(db: Database) -> None:
    h = History(db)
    a1 = fl(h, BASE, {"test-x": FAIL_GS})
    fl(h, BASE, {"test-x": FAIL_GS})
    a3 = fl(h, BASE, {"test-x": FAIL_GS})
    fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": FAIL_GS})
    c = cls(db, b)
    assert lines(c) == [("P nonblocking", f"test-x 4 guest-start fail like {a3}")]
    assert c.verdict == "Failures :-/ but no regressions." and c.subject_prefix == "tolerable "
    assert a1 in c.comparison_flights


def test_build_job_one_pass_is_regression_even_with_like(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK}, build="fail")
    a2 = fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": OK}, build="fail")
    c = cls(db, b)
    assert lines(c) == [
        ("A regression", f"build-amd64 2 xen-build fail REGR. vs. {a2}"),
        ("P nonblocking", "test-x 1 build-check(1) blocked n/a"),
    ]
    assert "blocked test-x build-check(1)" in c.mro


def test_build_failure_never_heisen(db: Database) -> None:
    h = History(db)
    a = fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": OK}, build="fail")
    fl(h, TGT, {"test-x": OK})  # same tuple, build passed
    c = cls(db, b)
    f = c.failures[0]
    assert (f.job, f.summary, f.heisen, f.blocker) == (
        "build-amd64",
        f"REGR. vs. {a}",
        False,
        "regression",
    )


def test_test_job_regression_but_heisen_when_same_tuple_passed(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": FAIL_GS})
    r = fl(h, TGT, {"test-x": OK}, blessing="real-retest")
    c = cls(db, b, refer_to_flights=[r])
    assert lines(c) == [("K heisenbug", f"test-x 4 guest-start fail pass in {r}-retest")]
    f = c.failures[0]
    assert f.heisen and f.passed_in == r and f.blocker is None
    assert c.heisen_flights == [r] and f"flight {r}" in c.mro
    assert [x.flight for x in c.flights] == [b, r] and c.flights[1].blessing == "real-retest"
    assert c.subject == "tolerable FAIL"


def test_failed_in_and_status_in(db: Database) -> None:
    h = History(db)
    a = fl(h, BASE, {"test-x": FAIL_GS, "test-y": [("host-install(3)", "broken")]})
    a2 = fl(
        h,
        BASE,
        {
            "test-x": [("host-install(3)", "pass"), ("xen-boot", "pass"), ("guest-start", "pass")],
            "test-y": [("host-install(3)", "pass")],
        },
    )
    b = fl(
        h,
        TGT,
        {
            "test-x": [
                ("host-install(3)", "pass"),
                ("xen-boot", "pass"),
                ("guest-start", "broken"),
            ],
            "test-y": [("host-install(3)", "fail")],
        },
    )
    c = cls(db, b)
    got = dict((f.job, f.summary) for f in c.failures if f.stepno is not None)
    # broken now, fail in a (180) beats pass in a2 (100); fail now, broken in a (170) too.
    assert got == {"test-x": f"failed in {a}", "test-y": f"broken in {a}"}
    assert a2 in c.comparison_flights
    assert "broken-step test-x guest-start" in c.mro


def test_broken_regression_is_a_broken_blocker(db: Database) -> None:
    h = History(db)
    a = fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": [("host-install(3)", "broken")]})
    c = cls(db, b)
    assert lines(c) == [
        ("A regression", "test-x <job status> broken"),
        ("A regression", f"test-x 2 host-install(3) broken REGR. vs. {a}"),
    ]
    assert [f.blocker for f in c.failures] == ["broken", "broken"]
    assert c.verdict == "Failures and problems with tests :-(" and c.subject_prefix == ""
    assert "broken-job test-x broken" in c.mro and "regression test-x" not in " ".join(c.mro)
    assert c.outcome == "trouble: broken/pass"


def test_absent_step_is_blocked_in_and_loses_to_a_pass(db: Database) -> None:
    h = History(db)
    a1 = fl(
        h,
        BASE,
        {"test-x": [("host-install(3)", "pass"), ("xen-boot", "pass"), ("guest-start", "pass")]},
    )
    a2 = fl(h, BASE, {"test-x": [("host-install(3)", "pass"), ("xen-boot", "fail")]})
    a3 = fl(h, BASE, {"test-x": [("host-install(3)", "pass"), ("xen-boot", "fail")]})
    b = fl(h, TGT, {"test-x": FAIL_GS})
    c = cls(db, b)
    assert [f.summary for f in c.failures] == [f"REGR. vs. {a1}"]
    c2 = cls(db, b, that_flight=a3)
    assert lines(c2) == [("P nonblocking", f"test-x 4 guest-start fail blocked in {a3}")]
    assert c2.that_flight == a3 and a2 not in c2.comparison_flights


def test_step_recorded_blocked_in_baseline(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK})
    a = fl(h, BASE, {"test-x": [*OK[:2], ("guest-start", "blocked")]})
    b = fl(h, TGT, {"test-x": FAIL_GS})
    # A recorded `blocked` status (170) beats an older pass (100): not a regression.
    assert lines(cls(db, b)) == [("P nonblocking", f"test-x 4 guest-start fail blocked in {a}")]


def test_baseline_untested_and_never_pass(db: Database) -> None:
    h = History(db)
    fl(h, "d" * 40, {"test-x": OK, "test-y": OK})
    b = fl(
        h,
        TGT,
        {"test-x": [*OK, ("migrate-support-check", "fail", False)], "test-y": FAIL_GS},
    )
    c = cls(db, b)
    assert lines(c) == [
        ("P nonblocking", "test-y 4 guest-start fail baseline untested"),
        ("P nonblocking", "test-x 5 migrate-support-check fail never pass"),
    ]
    assert "never-passed test-x migrate-support-check fail" in c.mro
    assert c.outcome == "FAIL" and c.tolerable


def test_never_pass_is_per_branch_unless_branches_also(db: Database) -> None:
    h = History(db)
    fl(h, "d" * 40, {"test-x": OK}, branch="other")
    b = fl(h, TGT, {"test-x": FAIL_GS})
    assert cls(db, b).failures[0].summary == "never pass"
    assert cls(db, b, branches_also=["other"]).failures[0].summary == "baseline untested"


def test_play_flight_pass_does_not_count_but_real_does(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK}, blessing="play")
    b = fl(h, TGT, {"test-x": FAIL_GS})
    assert cls(db, b).failures[0].summary == "never pass"
    fl(h, "e" * 40, {"test-x": OK}, blessing="real")
    assert cls(db, b, blessings=("real-retest",)).failures[0].summary == "baseline untested"


def test_direct_rows_blocked_starved_running_unexpected(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK})
    f = h.flight(BR, revs={"xen": TGT}, baseline={"xen": BASE})
    f.job("build-amd64", steps=[("xen-build", "pass")])
    f.job("test-b", deps={"buildjob": "build-amd64"}, steps=[("build-check(1)", "blocked")])
    f.job(
        "test-s",
        deps={"buildjob": "build-amd64"},
        steps=[("build-check(1)", "pass"), ("hosts-allocate", "starved")],
    )
    f.job(
        "test-r",
        deps={"buildjob": "build-amd64"},
        steps=[("build-check(1)", "pass"), ("guest-start", "running")],
    )
    f.job(
        "test-a",
        deps={"buildjob": "build-amd64"},
        steps=[("build-check(1)", "pass"), ("guest-start", "aborted")],
        status="aborted",
    )
    f.job("test-q", deps={"buildjob": "build-amd64"}, status="queued")
    b = h.save(f, finished=False)
    c = cls(db, b)
    got = {(x.job, x.testid): (x.summary, x.blocker, x.category) for x in c.failures}
    assert got == {
        ("test-b", "build-check(1)"): ("n/a", None, "P nonblocking"),
        ("test-s", "hosts-allocate"): ("n/a", None, "P nonblocking"),
        ("test-r", "guest-start"): ("", "unfinished", "A regression"),
        ("test-a", "guest-start"): ("[st=aborted!]", "broken", "A regression"),
        ("test-q", "<job status>"): ("", "broken", "A regression"),
    }
    assert {
        "blocked test-b build-check(1)",
        "blocked test-s hosts-allocate",
        "running test-r guest-start",
        "broken test-a guest-start aborted",
        "broken-job test-q queued",
    } <= set(c.mro)
    assert c.verdict == "Failures and problems with tests :-(" and c.blessing == "running"
    assert [j.job for j in c.jobs] == [
        "build-amd64",
        "test-a",
        "test-b",
        "test-q",
        "test-r",
        "test-s",
    ]


def test_section_order_and_ties(db: Database) -> None:
    h = History(db)
    fl(h, "d" * 40, {"test-x": OK, "test-y": OK})
    a = fl(h, BASE, {"test-x": FAIL_GS, "test-y": FAIL_GS})
    b = fl(
        h,
        TGT,
        {
            "test-y": FAIL_GS,
            "test-x": FAIL_GS,
            "test-z": [("hosts-allocate", "starved")],
            "test-w": [*OK, ("migrate-support-check", "fail", False)],
        },
    )
    c = cls(db, b, estimates={"test-y": 1.0, "test-x": 2.0})
    assert lines(c) == [
        ("P nonblocking", f"test-y 4 guest-start fail like {a}"),
        ("P nonblocking", f"test-x 4 guest-start fail like {a}"),
        ("P nonblocking", "test-w 5 migrate-support-check fail never pass"),
        ("P nonblocking", "test-z 2 hosts-allocate starved n/a"),
    ]
    assert c.outcome == "trouble: fail/pass/starved"
    assert [f.order for f in c.all_failures][:2] == [0, 1]
    assert [(k, len(v)) for k, v in c.sections()] == [("P nonblocking", 4)]


def test_scenario_fail_pass_in_and_fail_in_pass_in(db: Database) -> None:
    """The issue's scenario: A baseline passes; B regresses at guest-start; C (same target)
    passes guest-start but fails xen-boot in another job."""
    h = History(db)
    fl(h, BASE, {"test-x": OK, "test-y": OK})
    b = fl(h, TGT, {"test-x": FAIL_GS, "test-y": OK})
    cb = cls(db, b)
    assert [f.summary.split(" ")[0] for f in cb.failures] == ["REGR."]
    c_ = fl(h, TGT, {"test-x": OK, "test-y": [("host-install(3)", "pass"), ("xen-boot", "fail")]})
    c = cls(db, c_)
    assert lines(c) == [
        ("K heisenbug", f"test-x 4 guest-start fail in {b} pass in {c_}"),
        ("K heisenbug", f"test-y 3 xen-boot fail pass in {b}"),
    ]
    assert c.subject == "tolerable FAIL" and c.heisen_flights == [b]
    assert c.mro.count(f"flight {b}") == 1 and c.mro[0] == f"flight {c_}"


def test_heisen_flight_like_and_regression_still_blocking(db: Database) -> None:
    h = History(db)
    a = fl(h, BASE, {"test-x": OK, "test-y": [*OK[:2], ("guest-start", "fail")], "test-z": OK})
    fl(h, BASE, {"test-x": OK, "test-y": OK, "test-z": OK})
    m = fl(h, TGT, {"test-x": OK, "test-y": FAIL_GS, "test-z": FAIL_GS})
    f = fl(h, TGT, {"test-x": FAIL_GS, "test-y": OK, "test-z": FAIL_GS})
    c = cls(db, f)
    # The heisen flight's own regression of test-z is not printed twice (a blocking line for
    # that job and testid is already shown) but is still counted and handed to the bisector.
    assert ("A regression", f"test-z 4 guest-start fail in {m} REGR. vs. {a + 1}") not in lines(c)
    assert any(f.in_flight == m and f.blocker for f in c.all_failures)
    assert ("A regression", f"test-z 4 guest-start fail REGR. vs. {a + 1}") in lines(c)
    assert ("K heisenbug", f"test-x 4 guest-start fail pass in {m}") in lines(c)
    assert ("P nonblocking", f"test-y 4 guest-start fail in {m} like {a}") in lines(c)
    assert (
        c.verdict == "Regressions :-("
        and c.mro.count(f"regression test-z guest-start {a + 1}") == 2
    )


def test_heisen_broken_job_wart_10_and_osstest_rule(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK, "test-r": OK})
    m = fl(h, TGT, {"test-x": OK, "test-r": [("host-install(3)", "broken")]})
    f = fl(h, TGT, {"test-x": FAIL_GS, "test-r": OK})
    c = cls(db, f)
    assert lines(c) == [
        ("K heisenbug", f"test-r <job status> broken in {m}"),
        ("K heisenbug", f"test-r 2 host-install(3) broken in {m} pass in {f}"),
        ("K heisenbug", f"test-x 4 guest-start fail pass in {m}"),
    ]
    assert c.tolerable and c.subject == "tolerable FAIL"
    o = cls(db, f, osstest_heisen_broken=True)
    assert lines(o)[0] == ("A regression", f"test-r <job status> broken in {m}")
    assert o.verdict == "Failures and problems with tests :-(" and o.subject == "FAIL"
    assert "broken-step test-r host-install(3)" not in o.mro  # heisen mode: no broken-step


def test_dedup_rules(db: Database) -> None:
    h = History(db)
    fl(h, "d" * 40, {"test-p": OK})
    a = fl(h, BASE, {"test-x": OK, "test-p": FAIL_GS, "test-k": OK})
    # M: test-p fails like a (P), test-k guest-start fails (heisen: passes in F).
    m = fl(h, TGT, {"test-x": OK, "test-p": FAIL_GS, "test-k": FAIL_GS})
    # F: test-x heisen (pass in M) so M is examined; test-p like (P); test-k passes.
    f = fl(h, TGT, {"test-x": FAIL_GS, "test-p": FAIL_GS, "test-k": OK})
    c = cls(db, f)
    assert lines(c) == [
        ("K heisenbug", f"test-k 4 guest-start fail in {m} pass in {f}"),
        ("K heisenbug", f"test-x 4 guest-start fail pass in {m}"),
        ("P nonblocking", f"test-p 4 guest-start fail like {a}"),
    ]
    # The heisen flight's duplicate P entry for test-p was examined but not printed.
    assert len(c.all_failures) == 4


def test_dedup_later_category_must_sort_strictly_after(db: Database) -> None:
    from pushgate.judge.classify import dedup_and_order

    def mk(cat: str, order: int, blocker: str | None = None) -> Failure:
        return Failure("j", 1, "t", "fail", cat, 1, None, blocker, category=cat, order=order)

    kept = dedup_and_order([mk("K heisenbug", 0), mk("P nonblocking", 1), mk("M allowable", 2)])
    assert [f.category for f in kept] == ["K heisenbug", "P nonblocking"]
    kept = dedup_and_order([mk("P nonblocking", 0), mk("A regression", 1, "regression")])
    assert [f.category for f in kept] == ["A regression", "P nonblocking"]  # wart 9
    kept = dedup_and_order([mk("A regression", 0, "regression"), mk("A regression", 1, "broken")])
    assert [f.order for f in kept] == [0]  # one blocking line per job and testid is enough


def test_allow_patterns_clear_blockers_only(db: Database) -> None:
    h = History(db)
    a = fl(
        h,
        BASE,
        {
            "test-amd64-amd64-xl-rtds": OK,
            "test-amd64-xl-qemuu-x": OK,
            "test-amd64-amd64-libvirt": OK,
            "test-l": FAIL_GS,
        },
    )
    b = fl(
        h,
        TGT,
        {
            "test-amd64-amd64-xl-rtds": FAIL_GS,
            "test-amd64-xl-qemuu-x": FAIL_GS,
            "test-amd64-amd64-libvirt": FAIL_GS,
            "test-l": FAIL_GS,
        },
    )
    allow = [
        "# comment",
        "",
        "test-@@-rtds@@",
        "  test-@@-qemuu-@@   guest-start ",
        "test-@@-libvirt@@",
        "test-@@ @@",
        "!test-@@-libvirt@@",
        "!test-@@ @@",
    ]
    c = cls(db, b, allow=allow)
    got = {f.job: (f.category, f.allowed, f.blocker) for f in c.failures}
    assert got == {
        "test-amd64-amd64-xl-rtds": ("M allowable", True, None),
        "test-amd64-xl-qemuu-x": ("M allowable", True, None),
        "test-amd64-amd64-libvirt": ("A regression", False, "regression"),
        "test-l": ("P nonblocking", False, None),  # like: no blocker, so not "allowed"
    }
    assert f"regression test-amd64-amd64-libvirt guest-start {a}" in c.mro
    assert not any("xl-rtds" in x for x in c.mro if x.startswith("regression"))


def test_allow_pattern_syntax() -> None:
    (at,) = parse_allow(["test-@-x"])
    assert at.match("test-amd64-x anything")
    assert not at.match("test-amd64-i386-x anything")  # @ stays within one component
    assert not at.match("test-a.b-x t")  # and stops at '.'
    (at2,) = parse_allow(["test-@@ guest-@"])
    assert at2.match("test-a-b-c guest-start") and not at2.match("test-a guest-start/x")
    assert not at2.match("test-a guest-start.2")
    with pytest.raises(AllowPatternError):
        parse_allow(["test-( x"])
    with pytest.raises(AllowPatternError):
        parse_allow(["a b c"])


def test_no_baseline_report(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": FAIL_GS, "test-y": [("host-install(3)", "broken")]})
    c = classify(db, b, this=THIS, that={})
    assert {f.category for f in c.failures} == {"A fail"}
    assert [f.summary for f in c.failures if f.job == "test-x"] == ["baseline untested"]
    assert c.verdict == "Failures and problems with tests :-(" and not c.has_baseline
    b2 = fl(h, TGT, {"test-x": FAIL_GS}, blessing="real-bisect")
    c2 = classify(db, b2, this=THIS, that={})
    assert c2.subject == "tolerable FAIL" and c2.that == {}


def test_default_versions_from_recorded_baseline(db: Database) -> None:
    h = History(db)
    a = fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": FAIL_GS})
    c = classify(db, b)
    assert c.this == THIS and c.that == THAT
    assert c.failures[0].summary == f"REGR. vs. {a}"


def test_cross_flight_buildjob_and_prev_build(db: Database) -> None:
    h = History(db)
    a = h.flight(BR, revs={"xen": BASE}, baseline={"xen": BASE})
    a.job("build-amd64", steps=[("xen-build", "pass")])
    a.job("build-amd64-prev", steps=[("xen-build", "pass")], built={"xen": "9" * 40})
    a.job("test-x", deps={"buildjob": "build-amd64"}, steps=[("build-check(1)", "pass"), *OK])
    an = h.finish(a)
    # A retest-like flight reusing flight a's build: tested BASE through the reference.
    r = h.flight(BR, revs={"xen": BASE}, baseline={"xen": BASE})
    r.job(
        "test-x",
        deps={"buildjob": f"{an}.build-amd64"},
        built={},
        steps=[("build-check(1)", "pass"), *OK],
    )
    rn = h.finish(r)
    b = fl(h, TGT, {"test-x": FAIL_GS})
    c = cls(db, b)
    assert c.failures[0].summary == f"REGR. vs. {rn}" and an in c.comparison_flights


def test_mismatched_build_is_not_a_candidate(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK}, builds={"build-amd64": "pass", "build-i386": "pass"})
    f = h.flight(BR, revs={"xen": BASE}, baseline={"xen": BASE})
    f.job("build-amd64", steps=[("xen-build", "pass")])
    f.job("build-i386", steps=[("xen-build", "pass")], built={"xen": "f" * 40})
    f.job("test-x", deps={"buildjob": "build-amd64"}, steps=[("build-check(1)", "pass"), *OK])
    mism = h.finish(f)
    b = fl(h, TGT, {"test-x": FAIL_GS})
    c = cls(db, b)
    assert mism not in c.comparison_flights and c.failures[0].summary != f"REGR. vs. {mism}"


def test_unknown_flight(db: Database) -> None:
    with pytest.raises(LookupError):
        classify(db, 424242)


def test_json_shape(db: Database) -> None:
    h = History(db)
    fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": FAIL_GS})
    j = cls(db, b).to_json()
    assert j["subject"] == "regressions - FAIL" and j["failures"][0]["blocking"] is True
    assert j["failures"][0]["analysis"] == "regression" and j["jobs"][0]["job"] == "build-amd64"


# --- property: no regression where the same tuple passed; no heisen build -----------------

_STEP_ST = st.sampled_from(["pass", "pass", "pass", "fail", "broken"])
_FLIGHT = st.tuples(
    st.sampled_from([BASE, TGT]),
    st.sampled_from(["real", "real-retest"]),
    st.sampled_from(["pass", "pass", "pass", "fail"]),
    st.lists(_STEP_ST, min_size=3, max_size=3),
    st.lists(_STEP_ST, min_size=3, max_size=3),
)
_TESTIDS = ["host-install(3)", "xen-boot", "guest-start"]


def _truncate(statuses: list[str]) -> list[tuple[str, str]]:
    """Steps after the first fatal failure have no row."""
    out: list[tuple[str, str]] = []
    for testid, s in zip(_TESTIDS, statuses, strict=True):
        out.append((testid, s))
        if s != "pass":
            break
    return out


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    d = Database(f"sqlite:///{tmp_path_factory.mktemp('prop')}/p.db")
    d.upgrade()
    return d


_counter = iter(range(10**9))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history_spec=st.lists(_FLIGHT, min_size=1, max_size=8), last=_FLIGHT, seeded=st.booleans())
def test_property_no_regression_when_same_tuple_passed(
    shared_db: Database,
    history_spec: list[tuple[str, str, str, list[str], list[str]]],
    last: tuple[str, str, str, list[str], list[str]],
    seeded: bool,
) -> None:
    branch = f"prop-{next(_counter)}"
    h = History(shared_db)
    if seeded:  # an old all-pass flight of another revision: fewer `never pass`
        fl(h, "d" * 40, {"test-a": OK, "test-b": OK}, branch=branch)
    # (flight, rev, blessing, {(job, testid): status}) as written, for an independent check.
    written: list[tuple[int, str, str, dict[tuple[str, str], str]]] = []
    for rev, blessing, build, a, b in [*history_spec, (TGT, "real", *last[2:])]:
        tests = {"test-a": _truncate(a), "test-b": _truncate(b)}
        n = fl(h, rev, tests, blessing=blessing, build=build, branch=branch)
        seen = {("build-amd64", "xen-build"): build}
        if build == "pass":
            seen.update({(j, t): s for j, steps in tests.items() for t, s in steps})
        written.append((n, rev, blessing, seen))
    report = written[-1][0]
    c = cls(shared_db, report)
    for f in c.all_failures:
        event(f"{f.summary.split(' ')[0]} {f.blocker} heisen={f.heisen}")
        if f.job.startswith("build"):
            assert not f.heisen, f
        if f.blocker == "regression" and not f.job.startswith("build"):
            passed_same_tuple = [
                n
                for n, rev, _bl, seen in written
                if rev == TGT and n != f.flight and seen.get((f.job, f.testid)) == "pass"
            ]
            assert passed_same_tuple == [], (f, passed_same_tuple)


def test_ties_visit_real_before_retest_and_label_suffixes(db: Database) -> None:
    h = History(db)
    a = fl(h, BASE, {"test-x": OK})
    fl(h, BASE, {"test-x": OK}, blessing="real-retest")  # newer, but visited after `real`
    b = fl(h, TGT, {"test-x": FAIL_GS})
    assert cls(db, b).failures[0].summary == f"REGR. vs. {a}"
    bis = fl(h, BASE, {"test-x": FAIL_GS}, blessing="real-bisect")
    c = cls(db, b, blessings=("real", "real-bisect"))
    assert c.failures[0].summary == f"like {bis}-bisect" and c.failures[0].reference_flight == bis


def test_no_heisen_search_without_this_versions(db: Database) -> None:
    h = History(db)
    a = fl(h, BASE, {"test-x": OK})
    b = fl(h, TGT, {"test-x": FAIL_GS})
    fl(h, TGT, {"test-x": OK})
    assert cls(db, b).failures[0].heisen
    c = classify(db, b, this={}, that=THAT)
    assert c.failures[0].summary == f"REGR. vs. {a}" and c.blocking
