"""The real bisector on real git histories and real `real-bisect` flights.

Each history is made with `git fast-import` (one process for hundreds of commits). The build
job copies the tree's `code.txt` into its artifacts; the test job fails when the built file
contains BUG, and in the flaky variants also fails about 20% of the time on its own, decided
by a hash of a run counter kept in a file, so every run of the test is the same.
"""

from __future__ import annotations

import hashlib
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pushgate import config as cfgmod
from pushgate.bisect.runner import BisectResult, bisect
from pushgate.config import Loaded
from pushgate.db import bisections as dbb
from pushgate.db.engine import Database
from pushgate.flights import new_flight
from pushgate.scheduler import run_flight
from tests.flightkit import render_toml
from tests.gitrepo import git_env, make_repo

FLAKY_PY = """\
import hashlib, os, sys
path = os.environ["counter"]
n = int(open(path).read()) if os.path.exists(path) else 0
with open(path, "w") as f:
    f.write(str(n + 1))
built = os.path.join(os.environ["PUSHGATE_BUILD_ARTIFACTS"], "out", "code.txt")
if "BUG" in open(built).read():
    sys.exit(1)
sys.exit(1 if flaky(n) else 0)
"""


def flaky(seed: int, n: int, rate: int = 20) -> bool:
    h = hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()
    return int(h, 16) % 100 < rate


def fast_import(repo: Path, commits: list[dict[str, Any]], branch: str = "main") -> list[str]:
    """Append commits to `branch` in one `git fast-import`; returns their hashes in order.

    Each commit is {"files": {path: text}, "msg": str, "merge": <sha or None>}."""
    tip = subprocess.run(["git", "rev-parse", "--verify", "-q", branch], cwd=repo,
                         env=git_env(), capture_output=True, text=True).stdout.strip()
    out: list[str] = []
    stream: list[str] = []
    base = 1_704_110_400 + 3600 * len(tip)  # after gitrepo's clock
    for i, c in enumerate(commits):
        msg = c["msg"].encode()
        stream.append(f"commit refs/heads/{branch}\nmark :{i + 1}\n")
        when = base + 60 * (i + 1) + int(c.get("offset", 0))
        stream.append(f"author A U Thor <author@example.com> {when} +0000\n")
        stream.append(f"committer C O Mitter <committer@example.com> {when} +0000\n")
        stream.append(f"data {len(msg)}\n{c['msg']}\n")
        if i == 0 and c.get("from"):
            stream.append(f"from {c['from']}\n")
        elif i == 0 and tip:
            stream.append(f"from {tip}\n")
        if c.get("merge"):
            stream.append(f"merge {c['merge']}\n")
        for path, text in c["files"].items():
            data = text.encode()
            stream.append(f"M 100644 inline {path}\ndata {len(data)}\n{text}\n")
        stream.append("\n")
    marks = repo / ".git" / "marks"
    subprocess.run(["git", "fast-import", "--quiet", f"--export-marks={marks}"], cwd=repo,
                   env=git_env(), input="".join(stream).encode(), check=True)
    by_mark = dict(line.split() for line in marks.read_text().splitlines())
    out = [by_mark[f":{i + 1}"] for i in range(len(commits))]
    subprocess.run(["git", "reset", "-q", "--hard", branch], cwd=repo, env=git_env(), check=True)
    return out


def jobs(flaky_seed: int | None = None, counter: Path | None = None) -> dict[str, Any]:
    test: dict[str, Any] = {"buildjob": "build", "trees": []}
    if flaky_seed is None:
        test["steps"] = [{"testid": "check",
                          "command": '! grep -q BUG "$PUSHGATE_BUILD_ARTIFACTS/out/code.txt"'}]
    else:
        assert counter is not None
        script = counter.parent / "flaky.py"
        script.write_text(FLAKY_PY.replace("flaky(n)", f"flaky({flaky_seed}, n)")
                          .replace("import hashlib, os, sys",
                                   "import hashlib, os, sys\n" + _flaky_src()))
        test["steps"] = [{"testid": "check", "command": [sys.executable, str(script)]}]
        test["runvars"] = {"counter": str(counter)}
    return {
        "build": {
            "artifacts": ["out/*"],
            "steps": [{"testid": "build",
                       "command": "mkdir -p out && cat */code.txt > out/code.txt"}],
        },
        "test": test,
    }


def _flaky_src() -> str:
    return ("def flaky(seed, n, rate=20):\n"
            "    h = hashlib.sha256(f'{seed}:{n}'.encode()).hexdigest()\n"
            "    return int(h, 16) % 100 < rate\n")


class Proj:
    def __init__(self, tmp: Path, db_url: str, trees: tuple[str, ...] = ("src",)) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.repos = {t: make_repo(tmp / t) for t in trees}
        for r in self.repos.values():
            r.commit("initial", files={"code.txt": "v0\n"})
        self.trees = trees

    def load(self, jobspec: dict[str, Any]) -> tuple[Loaded, Database]:
        data: dict[str, Any] = {
            "state": {"dir": "state", "database": self.db_url},
            "runner": {"heartbeat_s": 0.5, "lease_s": 3},
            "trees": {t: {"url": str(r.path), "input_ref": "main", "tested_ref": "tested"}
                      for t, r in self.repos.items()},
            "branches": {"b": {"tree": self.trees[0], "other_trees": list(self.trees[1:]),
                               "jobs": list(jobspec), "mail_to": ["dev@example.org"]}},
            "hosts": {"localhost": {"slots": 2, "flags": ["arch-amd64"]}},
            "jobs": jobspec,
        }
        path = self.tmp / "pushgate.toml"
        path.write_text(render_toml(data))
        loaded = cfgmod.load(path)
        db = Database(loaded.database_url)
        db.upgrade()
        return loaded, db

    def flight(self, db: Database, loaded: Loaded, revs: dict[str, str]) -> tuple[int, str]:
        f = new_flight(db, loaded, "b", revs=revs)
        statuses, _ = run_flight(db, loaded, f)
        return f, statuses["test"]


def linear(n: int, culprit: int | None, start: int = 1) -> list[dict[str, Any]]:
    return [{"msg": f"change {i}" + (" (the bug)" if i == culprit else ""),
             "files": {"code.txt": f"v{i}\n" + ("BUG\n" if culprit is not None and i >= culprit
                                                 else "")}}
            for i in range(start, start + n)]


def _report(name: str, res: BisectResult, seconds: float) -> None:
    print(f"\n{name}: outcome={res.outcome} probe flights={len(res.probe_flights)}"
          f" runs={res.runs} rounds={res.rounds} wall={seconds:.1f}s")


# Deterministic search with the floor f=0.1 and tau=0.998, C=0.999 (n = 3 pairs): 2 endpoint
# repros + ceil(log2 N) halvings + up to 2n confirmation runs, about half of which the
# search's own last probes supply; 8 covers the endpoints plus all 6 confirmation runs.
DETERMINISTIC_SLACK = 8


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_linear_300_names_the_culprit(tmp_path: Path, db_url: str) -> None:
    p = Proj(tmp_path, db_url)
    loaded, db = p.load(jobs())
    good = p.repos["src"].head
    f0, st0 = p.flight(db, loaded, {"src": good})
    assert st0 == "pass"
    k = random.Random(5).randrange(1, 301)
    shas = fast_import(p.repos["src"].path, linear(300, k))
    f1, st1 = p.flight(db, loaded, {"src": shas[-1]})
    assert st1 == "fail"
    t0 = time.monotonic()
    res = bisect(db, loaded, "b", "test", "check")
    _report(f"linear-300 culprit #{k}", res, time.monotonic() - t0)
    assert res.outcome == "complete", res.body
    assert res.culprit_tree == "src" and res.culprit_commit == shas[k - 1]
    assert res.not_present == [shas[k - 2] if k > 1 else good]
    assert len(res.probe_flights) <= math.ceil(math.log2(300)) + DETERMINISTIC_SLACK
    assert res.subject == "[b bisection] complete test"
    assert f"  Bug introduced:  {shas[k - 1]}\n" in res.body
    assert f"  commit {shas[k - 1]}\n" in res.body
    assert res.svg_path is not None and res.svg_path.is_file()
    with db.read() as conn:
        row = dbb.get_bisection(conn, res.id)
    assert row is not None and row.status == "complete" and row.culprit_commit == shas[k - 1]
    assert (row.latest_flight, row.basis_flight) == (f1, f0)
    # Builds are reused: the culprit and its parent were each built once however often run.
    built = {(t.node, t.flight) for t in res.trace}
    assert len(built) == len(res.trace)
    # A second call does not bisect again: the row is finished, a new one would start.
    db.dispose()
