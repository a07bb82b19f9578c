"""`pushgate demo` shows the whole gate: pushed, regressions not pushed, the fix pushed."""

from __future__ import annotations

import json
import mailbox
import re
import subprocess
import sys
from pathlib import Path

from pushgate import config as cfgmod
from pushgate.db import bisections as dbb
from pushgate.db import flights as dbf
from pushgate.db import mailqueue as dbm
from pushgate.db.engine import Database
from tests.gitrepo import remote_head


def test_demo_runs_the_gate_over_three_revisions(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "pushgate.cli", "demo", str(d), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    subjects = re.findall(r"^Subject: (.*)$", text, re.M)
    assert len(subjects) == 3, text
    assert subjects[0] == "[rpn test] 1: all pass - PUSHED"
    assert subjects[1] == "[rpn test] 2: regressions - FAIL"
    assert re.fullmatch(r"\[rpn test\] \d+: all pass - PUSHED", subjects[2])
    assert "Pushing revision " in text and "Not pushing." in text
    assert " test-release-unit             2 unit                         fail  REGR. vs. 1" in text
    mbox = d / "state" / "mail.mbox"
    assert f"mbox:   {mbox}" in text
    mailed = [str(m["Subject"]) for m in mailbox.mbox(str(mbox))]
    assert [s for s in mailed if s.startswith("[rpn test]")] == subjects
    n = int(subjects[1].split()[2].rstrip(":"))
    # The regression cycle only opened the bisections: its report was mailed before the
    # first probe flight started, and is before the bisection mails in the mbox.
    loaded = cfgmod.load(d / "pushgate.toml")
    db = Database(loaded.database_url)
    with db.read() as conn:
        (report,) = [m for m in dbm.list_mail(conn, n) if m.kind == "report"]
        bis = dbb.of_flight(conn, n)
        probes = [f for f in dbf.list_flights(conn, limit=1000) if f.blessing == "real-bisect"]
    db.dispose()
    assert report.sent is not None and probes
    assert report.sent < min(f.started or 0 for f in probes)
    order = [s for s in mailed if s.startswith(("[rpn test] 2:", "[rpn bisection]"))]
    assert order[0] == subjects[1] and len(order) == 3, mailed
    assert "the report went out before the bisection started" in text
    # The two regressions (one commit broke both jobs) cost one search: every probe flight
    # ran both jobs, and the second bisection concluded from the first's flights.
    assert sorted(b.job for b in bis) == ["test-debug-unit", "test-release-unit"]
    assert all(b.status == "complete" for b in bis)
    one = bis[0].runs  # the first search's probe runs: what one job alone costs
    assert one >= 4 and len(probes) <= 1.3 * one, (len(probes), one)
    m = re.search(r"2 regressions of flight \d+: (\d+) probe flights in all, against (\d+)", text)
    assert m is not None and int(m.group(1)) == len(probes) and int(m.group(2)) == one, text
    fix = subprocess.run(
        ["git", "-C", str(d / "rpn"), "rev-parse", "staging"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert remote_head(d / "rpn", "master") == fix  # the tested ref holds the fix
    times = [
        float(t)
        for t in re.findall(r"([\d.]+) s", text.split("cycle wall times:")[1].splitlines()[0])
    ]
    assert len(times) == 3 and all(t < 30 for t in times)
    # The bisector names the commit with the bug, inside a series of harmless ones.
    log = subprocess.run(
        ["git", "-C", str(d / "rpn"), "log", "--format=%H %s", "staging"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    buggy = next(
        line.split()[0]
        for line in log.splitlines()
        if line.endswith("rpn: tidy the operator switch")
    )
    assert f"culprit of test-release-unit unit: rpn {buggy}" in text

    # The report of the regression flight, as HTML and JSON, from the command line.
    cfg = str(d / "pushgate.toml")
    html = subprocess.run(
        [
            sys.executable,
            "-m",
            "pushgate.cli",
            "-c",
            cfg,
            "report",
            str(n),
            "--html",
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
    )
    assert html.returncode == 0, html.stderr
    index = (tmp_path / "html" / "index.html").read_text()
    assert f"bisection of test-release-unit unit: complete rpn {buggy[:12]}" in index
    assert ".svg" in index and "REGR. vs. 1" in index
    build_page = (tmp_path / "html" / "job-build-release.html").read_text()
    assert "rpn/rpn" in build_page  # the kept artifact is listed
    js = subprocess.run(
        [sys.executable, "-m", "pushgate.cli", "-c", cfg, "report", str(n), "--json"],
        capture_output=True,
        text=True,
    )
    data = json.loads(js.stdout)
    assert any(f["job"] == "test-release-unit" and f["blocking"] for f in data["failures"])
