"""The bisection mail against the structure of osstest's real bisection mail."""

from __future__ import annotations

import re
from pathlib import Path

from pushgate import config as cfgmod
from pushgate.bisect.graph import RevGraph
from pushgate.bisect.report import render
from pushgate.bisect.runner import BisectResult, TraceRow
from pushgate.bisect.search import Outcome
from pushgate.db.bisections import BisectionRow
from pushgate.paths import launder
from tests.shared import osstest_reports

REAL = "xen-unstable-smoke-bisection-build-amd64-libvirt-171909.txt"

# Line shapes of the mail, in the order osstest prints them (first occurrence of each).
SHAPES = [
    ("branch", r"branch \S+$"),
    ("job", r"job \S+$"),
    ("testid", r"testid \S+$"),
    ("tree", r"Tree: \S+ \S+$"),
    ("found", r"\*\*\* Found and reproduced problem changeset \*\*\*$"),
    ("in-tree", r"  Bug is in tree:  \S+ \S+$"),
    ("introduced", r"  Bug introduced:  [0-9a-f]{40}$"),
    ("not-present", r"  Bug not present: [0-9a-f]{40}$"),
    ("last-fail", r"  Last fail repro: \S+/\d+/$"),
    ("commit", r"  commit [0-9a-f]{40}$"),
    ("graph-see", r"For bisection revision-tuple graph see:$"),
    ("graph-url", r"   \S+$"),
    ("graph-ids", r"Revision IDs in each graph node refer, respectively, to the Trees above\.$"),
    ("dashes", r"-{40}$"),
    ("searching", r"Searching for failure / basis pass:$"),
    ("pair", r"Failure / basis pass flights: \S+ / \S+$"),
    ("latest", r"Latest [0-9a-f ]+$"),
    ("basis", r"Basis pass [0-9a-f ]+$"),
    ("loaded", r"Loaded \d+ nodes in revision graph$"),
    ("results", r"Searching for test results:$"),
    ("result", r" \d+ (pass|fail) [0-9a-f ]+$"),
]


def skeleton(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        for name, rx in SHAPES:
            if re.match(rx, line):
                if name not in out:
                    out.append(name)
                break
    return out


def _fixture(tmp_path: Path) -> tuple[str, str, list[str]]:
    cfg = tmp_path / "pushgate.toml"
    cfg.write_text(
        '[trees.xen]\nurl = "git://xenbits.xen.org/xen.git"\n'
        '[branches.xen-unstable-smoke]\ntree = "xen"\njobs = ["build-amd64-libvirt"]\n'
        '[jobs.build-amd64-libvirt]\nsteps = [{testid = "libvirt-build", command = "true"}]\n'
        '[report]\nlogs_url = "http://logs.example.org/osstest/logs"\n'
    )
    loaded = cfgmod.parse(cfg.read_text(), cfg)
    shas = [f"{i:x}" * 40 for i in range(1, 6)]
    g = RevGraph(
        ["xen"],
        {(shas[i],): [(shas[i - 1],)] if i else [] for i in range(5)},
        {(shas[i],): 100 + i for i in range(5)},
    )
    row = BisectionRow(
        id=1,
        branch="xen-unstable-smoke",
        job="build-amd64-libvirt",
        testid="libvirt-build",
        basis={"xen": shas[0]},
        latest={"xen": shas[4]},
        basis_flight=171884,
        latest_flight=171899,
        host="himrod1",
        start_flight=171899,
        status="running",
        culprit_tree=None,
        culprit_commit=None,
        confidence=None,
        runs=0,
        reason=None,
        created=0.0,
        finished=None,
    )
    trace = [
        TraceRow(171884, "pass", (shas[0],), "himrod1", "history"),
        TraceRow(171899, "fail", (shas[4],), "himrod1", "trigger"),
        TraceRow(171902, "pass", (shas[0],), "himrod1", "probe"),
        TraceRow(171905, "fail", (shas[2],), "himrod1", "probe"),
        TraceRow(171906, "pass", (shas[1],), "himrod1", "probe"),
        TraceRow(171909, "fail", (shas[2],), "himrod1", "probe"),
    ]
    out = Outcome(
        "complete", (shas[2],), 0.99962, 4, p_flake=4e-5, p_env=1e-5, f_mean=0.1, eps_mean=0.01
    )
    res = BisectResult(
        id=1,
        branch=row.branch,
        job=row.job,
        testid=row.testid,
        outcome="complete",
        exit_code=4,
        culprit={"xen": shas[2]},
        culprit_tree="xen",
        culprit_commit=shas[2],
        not_present=[shas[1]],
        confidence=0.99962,
        runs=4,
        probe_flights=[171902],
        rounds=4,
        svg_path=tmp_path / "g.svg",
        trace=trace,
    )
    subject, body = render(loaded, row, g, out, res, [])
    return subject, body, shas


def test_complete_mail_follows_osstest_structure(tmp_path: Path) -> None:
    subject, body, shas = _fixture(tmp_path)
    real = (osstest_reports() / REAL).read_text(encoding="utf-8")
    real_body = real[real.index("\nbranch ") + 1 :]
    assert subject == "[xen-unstable-smoke bisection] complete build-amd64-libvirt"
    assert f"Subject: {subject}\n" in real
    # osstest's real mail has a commit log from git; ours has none here (no mirror), so the
    # comparison leaves `commit` out. Everything else comes in the same order.
    want = [s for s in skeleton(real_body) if s != "commit"]
    assert len(want) == len(SHAPES) - 1
    assert skeleton(body) == want
    lines = body.splitlines()
    i = lines.index("*** Found and reproduced problem changeset ***")
    assert lines[i + 1] == ""
    assert lines[i + 2] == "  Bug is in tree:  xen git://xenbits.xen.org/xen.git"
    assert lines[i + 3] == f"  Bug introduced:  {shas[2]}"
    assert lines[i + 4] == f"  Bug not present: {shas[1]}"
    assert lines[i + 5] == "  Last fail repro: http://logs.example.org/osstest/logs/171909/"
    # pushgate's two added lines, labels padded to 17 columns like osstest's.
    assert lines[i + 6].startswith("  Posterior:       P(culprit)=0.99962 P(flake)=0.00004")
    assert lines[i + 7].startswith("  Evidence:        f=0.10 eps~0.01; runs 4")
    # The summary appears twice, as in osstest (summary file, then the trace).
    assert body.count("*** Found and reproduced problem changeset ***") == 2
    assert body.count(f"  Bug introduced:  {shas[2]}") == 2
    assert " 171909 fail " + shas[2] in body
    assert (
        "   http://logs.example.org/osstest/logs/bisect/xen-unstable-smoke/"
        "build-amd64-libvirt.libvirt-build.svg" in body
    )


def test_launder_keeps_paths_inside() -> None:
    assert launder("guest-migrate/src_host/dst_host") == "guest-migrate--src_host--dst_host"
    assert launder("../../etc") == "_..--..--etc"
    assert "/" not in launder("a/../b") and not launder(".x").startswith(".")


def test_mail_links_the_bisected_flight_and_counts_what_its_trace_shows(tmp_path: Path) -> None:
    _, body, _ = _fixture(tmp_path)
    lines = body.splitlines()
    assert lines[:4] == [
        "branch xen-unstable-smoke",
        "job build-amd64-libvirt",
        "testid libvirt-build",
        "flight 171899 http://logs.example.org/osstest/logs/171899/",
    ]
    # The fixture's Outcome says runs=4 and BisectResult rounds=4; the counts printed are
    # those of the trace printed below them (4 probe runs, 2 earlier results).
    printed = re.findall(r"^ (\d+) (pass|fail|broken) [0-9a-f ]+$", body, re.M)
    assert len(printed) == 6
    ev = next(x for x in lines if x.startswith("  Evidence:"))
    assert "runs 4 in 4 probe flights (171902..171909), 2 earlier results; on himrod1" in ev
    assert "rounds" not in ev


def test_evidence_counts_follow_the_trace_not_the_search_totals(tmp_path: Path) -> None:
    from dataclasses import replace

    from pushgate.bisect.report import evidence_counts
    from pushgate.bisect.result import TraceRow as T

    res = BisectResult(
        id=2, branch="b", job="j", testid="t", outcome="complete", exit_code=4, culprit=None,
        culprit_tree=None, culprit_commit=None, not_present=[], confidence=0.9, runs=99,
        probe_flights=[], rounds=0,
        trace=[T(5, "fail", ("a",), "h", "trigger"), T(7, "pass", ("b",), "h", "probe")],
    )  # fmt: skip
    assert evidence_counts(res) == "runs 1 in 1 probe flights (7), 1 earlier results"
    shared = replace(res, shared_with=[1])
    assert evidence_counts(shared).endswith("(7) shared with bisection 1, 1 earlier results")
