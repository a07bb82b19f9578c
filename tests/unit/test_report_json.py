"""The JSON rendering: a real history classified, real git commits and people."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from pushgate.db.engine import Database
from pushgate.git import Mirror
from pushgate.judge.classify import classify
from pushgate.publish.jsonout import render_json
from pushgate.publish.text import AgeLine, PushAge, ReportContext
from tests.gitrepo import make_repo
from tests.historybuilder import History

A, B = "a" * 40, "b" * 40


def _history(db: Database) -> int:
    """Flight 1 on A passes everything; flight 2 on B regresses guest-start and has a
    never-passing probe; flight 3 (retest) passes xen-boot of flight 2."""
    h = History(db)
    f1 = h.flight("xen", {"xen": A}, flight=1)
    f1.job("build-amd64", [("xen-build", "pass")])
    f1.job(
        "test-amd64-xl",
        [("xen-boot", "pass"), ("guest-start", "pass"), ("migrate-support-check", "fail", False)],
    )
    f1.job("test-amd64-pv", [("xen-boot", "pass")])
    h.finish(f1)
    f2 = h.flight("xen", {"xen": B}, flight=2)
    f2.job("build-amd64", [("xen-build", "pass")])
    f2.job(
        "test-amd64-xl",
        [("xen-boot", "pass"), ("guest-start", "fail"), ("migrate-support-check", "fail", False)],
    )
    f2.job("test-amd64-pv", [("xen-boot", "fail")])
    h.finish(f2)
    f3 = h.flight("xen", {"xen": B}, flight=3, blessing="real-retest")
    f3.job("test-amd64-pv", [("xen-boot", "pass")])
    h.finish(f3)
    return 2


def test_render_json_has_every_fact(db: Database, tmp_path: Path) -> None:
    flight = _history(db)
    c = classify(db, flight, this={"xen": B}, that={"xen": A}, refer_to_flights=[3])

    repo = make_repo(tmp_path / "xen")
    base = repo.commit("base", files={"a": "1\n"})
    repo.commit(
        "fix <thing> & more",
        files={"a": "2\n"},
        author="Ann <ann@example.org>",
        trailers=[
            ("Signed-off-by", "Ann <ann@example.org>"),
            ("Reviewed-by", "Rev <rev@example.org>"),
        ],
    )
    tip = repo.commit(
        "second", files={"b": "1\n"}, trailers=[("Acked-by", "Bob <bob@example.org>")]
    )
    m = Mirror(tmp_path / "state" / "xen.git", str(repo.clone_bare(tmp_path / "xen.git")))
    m.fetch()
    now = datetime(2024, 1, 3, tzinfo=UTC)
    ctx = ReportContext(
        logs_url="http://logs.example.org/logs/",
        people=m.people_touched(base, tip),
        commits=m.log_range(base, tip),
        push_age=PushAge(
            AgeLine(1, datetime(2024, 1, 1, tzinfo=UTC)),
            None,
            AgeLine(2, datetime(2024, 1, 2, tzinfo=UTC), 1),
            now,
        ),
    )
    d = render_json(c, ctx)
    json.loads(json.dumps(d))  # serialisable as is

    assert d["flight"] == 2 and d["branch"] == "xen"
    assert d["subject"] == "[xen test] 2: regressions - FAIL"
    assert d["verdict"] == "Regressions :-("
    assert d["decision"]["blocking"] is True and d["decision"]["blockers"] == ["regression"]
    assert d["versions"] == {"this": {"xen": B}, "that": {"xen": A}}
    assert d["logs_url"] == "http://logs.example.org/logs/2/"
    by_key = {(f["job"], f["testid"]): f for f in d["failures"]}
    reg = by_key[("test-amd64-xl", "guest-start")]
    assert reg["annotation"] == "REGR. vs. 1" and reg["blocking"] and reg["blocker"] == "regression"
    assert reg["category"] == "A regression" and reg["stepno"] == 2 and reg["status"] == "fail"
    assert reg["reference_flights"]["regression_vs"] == 1
    heisen = by_key[("test-amd64-pv", "xen-boot")]
    assert heisen["annotation"] == "pass in 3-retest" and heisen["heisen"]
    assert not heisen["blocking"] and heisen["reference_flights"]["passed_in"] == 3
    never = by_key[("test-amd64-xl", "migrate-support-check")]
    assert never["annotation"] == "never pass" and never["category"] == "P nonblocking"
    assert d["heisen_flights"] == [3]
    assert [f["flight"] for f in d["flights"]] == [2, 3]
    assert d["jobs"][0] == {"job": "build-amd64", "status": "pass"}

    assert d["people"] == [
        "A U Thor <author@example.com>",
        "Ann <ann@example.org>",
        "Bob <bob@example.org>",
    ]
    assert [x["subject"] for x in d["commits"]] == ["second", "fix <thing> & more"]
    assert d["commits"][0]["sha"] == tip and d["commits"][1]["author"] == "Ann <ann@example.org>"
    assert ["Signed-off-by", "Ann <ann@example.org>"] in d["commits"][1]["trailers"]
    assert d["push_age"]["testing_same_since"] == {
        "flight": 2,
        "started": "2024-01-02T00:00:00+00:00",
        "attempts": 1,
    }


def test_render_json_perfect_without_context(db: Database) -> None:
    h = History(db)
    f = h.flight("ovmf", {"ovmf": A}, flight=7)
    f.job("build-amd64", [("xen-build", "pass")])
    h.finish(f)
    d = render_json(classify(db, 7, this={"ovmf": A}, that={}))
    assert d["verdict"] == "Perfect :-)" and d["failures"] == []
    assert d["decision"] == {
        "blocking": False,
        "tolerable": True,
        "perfect": True,
        "reasons": [],
        "blockers": [],
    }
    assert d["people"] == [] and d["commits"] == [] and d["push_age"] is None
