"""Issue 11 items 3 and 5 through the CLI as a user runs it: a tree URL's token appears in
no output, database row, log, page or mirror file; control characters in commit authors
and subjects, job names and testids reach the terminal escaped."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.redact import redact_url
from tests.flightkit import make_project
from tests.gateproject import make_gate_project
from tests.httpgit import serve_with_auth
from tests.integration.test_cli import pg

TOKEN = "tok-9f8e7d6c5b4a"

JOBS = {
    "build": {
        "artifacts": ["out"],
        "steps": [
            {
                "testid": "build",
                # A step that prints what it can see of the tree's URL.
                "command": 'env; cd "$PUSHGATE_SRC_SRC" && git remote -v; git config -l; '
                "cat .git; mkdir -p ../out; echo built > ../out/x",
            }
        ],
    },
    "test": {"buildjob": "build", "steps": [{"testid": "run", "command": "env"}]},
}


def test_tree_url_token_is_never_shown(tmp_path: Path) -> None:
    proj = make_project(tmp_path, f"sqlite:///{tmp_path}/state/pushgate.db")
    (tmp_path / "srv").mkdir()
    bare = proj.repo.clone_bare(tmp_path / "srv" / "src.git")
    with serve_with_auth(bare, "ci", TOKEN) as url:
        tree = {"url": url, "input_ref": "main", "tested_ref": "tested"}
        cfg = str(proj.config(JOBS, extra={"trees": {"src": tree}}))
        outs = []

        def run(*args: str) -> str:
            r = pg("-c", cfg, *args)
            outs.append(r.stdout + r.stderr)
            assert r.returncode == 0, r.stderr
            return r.stdout

        summary = run("check")
        assert redact_url(url) in summary  # shown, redacted
        assert f"tree_src={redact_url(url)}" in run("check", "--dump-flights")
        n = run("flight", "new", "b").strip()
        run("flight", "run", n)
        run("flight", "show", n)
        data = json.loads(run("flight", "show", n, "--json"))
        assert data["jobs"][0]["runvars"]["tree_src"] == redact_url(url)
        run("report", n, "--html", str(tmp_path / "html"))
        run("report", n, "--json")
    text = "\n".join(outs)
    assert "PUSHGATE_SRC_SRC" in text or (tmp_path / "state" / "logs").is_dir()
    assert TOKEN not in text
    # Every file pushgate wrote (database, logs, artifacts, mirrors, pages), byte for byte.
    written = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    written += [p for p in (tmp_path / "html").rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in written) and any("log" in str(p) for p in written)
    leaks = [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert not leaks
    # The step's log did see the URL: redacted.
    logs = b"".join(p.read_bytes() for p in written if "logs" in p.parts)
    assert f"tree_src={redact_url(url)}".encode() in logs
    with sqlite3.connect(tmp_path / "state" / "pushgate.db") as conn:
        rows = conn.execute("select url from flight_revisions").fetchall()
    assert rows == [(redact_url(url),)]


HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m"


def test_control_characters_reach_the_terminal_escaped(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path / "p")
    c1 = p.commit("one")
    p.set_tested(c1)
    p.work.commit(
        f"subject {HOSTILE} end",
        files={"app.txt": "two\n"},
        author=f"Evil {HOSTILE} Person <evil@example.org>",
    )
    p.work.push(p.bare, "HEAD:refs/heads/main")
    for _ in range(2):  # a baseline flight of c1, then the flight of the hostile commit
        r = p.cli("branch", "run", "app", "-q")
        assert r.returncode == 0, r.stderr
    # A flight whose job and testid names came from elsewhere than the config.
    loaded = p.load()
    db = Database(loaded.database_url)
    with db.write() as conn:
        f = dbf.create_flight(
            conn,
            branch="app",
            intended="play",
            bless_as="play",
            revisions={},
            new_jobs=[dbf.NewJob(f"job{HOSTILE}", {}, {})],
        )
        dbf.start_step(conn, f, f"job{HOSTILE}", 1, f"case{HOSTILE}", False, None)
    shown = {
        "report": p.cli("report", "2"),
        "show": p.cli("flight", "show", str(f)),
        "list": p.cli("flight", "list"),
        "missing": p.cli("report", "999"),
    }
    for what, out in shown.items():
        text = out.stdout + out.stderr
        for c in "\x1b\x07\x9b":
            assert c not in text, (what, text)
    assert "Evil \\x1b]0;owned\\x07\\x1b[2J\\x9b31m Person" in shown["report"].stdout
    assert "job\\x1b]0;owned" in shown["show"].stdout
    assert "case\\x1b]0;owned" in shown["show"].stdout
