"""A hostile commit cannot change pushgate's state or read its secrets (invariant 7).

The commit's build script knows where everything is (the test tells it) and tries:
to write the database (every step passes, the branch forced) over SQLite's file,
PostgreSQL's TCP port and its Unix socket; to write and read the git mirror and
to move the tested ref in the repository itself; to read other jobs' artifacts,
pushgate's config and its environment (SMTP password, agent socket, cloud key);
to create files all over the state dir. On SQLite and on PostgreSQL (trust
authentication on loopback, as on these machines, with steps kept off the network
as the README says). Nothing changes: the regression blocks, nothing is pushed,
and no secret appears in any log, report, page, mail or database row.

With ISOLATION = "none" below the same commit is pushed, on both databases (the
test fails there); with the step environment copied from pushgate's, the SMTP
password shows in the logs (the test fails there too).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from pushgate.daemon.cycle import run_cycle
from pushgate.db import schema
from pushgate.db.engine import Database
from pushgate.publish.mail.transport import MemoryMailer
from tests.gateproject import make_gate_project

ISOLATION = "bwrap"

SMTP_PASSWORD = "smtp-" + uuid.uuid4().hex
OTHER_SECRETS = {
    "SSH_AUTH_SOCK": "/tmp/ssh-agent-" + uuid.uuid4().hex,
    "AWS_SECRET_ACCESS_KEY": "aws-" + uuid.uuid4().hex,
    "PUSHGATE_TEST_SECRET": "pgtest-" + uuid.uuid4().hex,
}
PRIVATE = "PRIVATE-ARTIFACT-" + uuid.uuid4().hex

HOSTILE = r"""#!/bin/sh
echo "hostile: start"
env
cat "{config}"
echo "== the database"
sqlite3 "{sqlite}" "UPDATE steps SET status='pass'; UPDATE jobs SET status='pass';
  SELECT 'DBREAD-' || count(*) FROM steps;"
head -c 64 "{sqlite}"
for where in "host=127.0.0.1" "host=/var/run/postgresql" "host=/run/postgresql"; do
  psql "$where {pg}" -c "UPDATE steps SET status='pass'; UPDATE jobs SET status='pass';
    SELECT 'DBREAD-' || count(*) FROM steps;"
done
echo "== the mirror and the repository"
cat "{state}/git/app.git/config"
echo evil > "{state}/git/app.git/refs/heads/evil"
git --git-dir="{bare}" update-ref refs/heads/tested HEAD
git --git-dir="{bare}" update-ref refs/heads/evil HEAD
echo "== other jobs' artifacts"
cat "{state}"/artifacts/*/test-a-private/*
find "{state}/artifacts" -type f -exec cat {{}} +
echo "== other processes"
cat /proc/*/environ | tr '\0' '\n' | grep -i -e smtp -e secret
echo "== the state dir"
for d in "{state}" "{state}/logs" "{state}/git" "{state}/tmp" "{state}/work" "{base}"; do
  touch "$d/evil-file"; mkdir "$d/evil-dir"
done
echo "hostile: done"
exit 0
"""

# Formatted by make_gate_project (braces doubled).
EXTRA = """
[jobs.test-a-private]
artifacts = ["private.txt"]
steps = [{{ testid = "make", command = "echo @PRIVATE@ > private.txt" }}]

[jobs.test-hostile]
[[jobs.test-hostile.steps]]
testid = "run"
command = 'if [ -f "$PUSHGATE_SRC_APP/hostile.sh" ]; then sh "$PUSHGATE_SRC_APP/hostile.sh"; fi'
"""


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """The project outside /tmp: a sandbox's private /tmp would hide it whole, and the
    test is of what the sandbox's own rules hide."""
    d = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="pushgate-hostile-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _rows(db: Database) -> str:
    """Every row of every table, as text."""
    out = []
    with db.read() as conn:
        for table in schema.metadata.sorted_tables:
            out += [repr(tuple(r)) for r in conn.execute(select(table))]
    return "\n".join(out)


def _files_text(root: Path) -> str:
    return "\n".join(
        p.read_bytes().decode(errors="replace") for p in sorted(root.rglob("*")) if p.is_file()
    )


def test_a_hostile_commit_changes_nothing_of_pushgates(
    outside_tmp: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = outside_tmp
    monkeypatch.setenv("GATE_SMTP_PASSWORD", SMTP_PASSWORD)
    for k, v in OTHER_SECRETS.items():
        monkeypatch.setenv(k, v)
    base = tmp_path / "gate"
    p = make_gate_project(
        base,
        # SQLite: the default, state/pushgate.db.
        db_url=None if db_url.startswith("sqlite") else db_url,
        mail='password_env = "GATE_SMTP_PASSWORD"\nuser = "pushgate"',
        extra=EXTRA.replace("@PRIVATE@", PRIVATE),
    )
    cfg = p.cfg_path.read_text().replace("[runner]\n", f'[runner]\nisolation = "{ISOLATION}"\n')
    p.cfg_path.write_text(cfg)
    loaded = p.load()
    db = Database(loaded.database_url)
    db.upgrade()
    mailer = MemoryMailer()
    c1 = p.commit("hello")
    r1 = run_cycle(db, loaded, "app", mailer=mailer)
    assert r1.push is not None and r1.push.status == "pushed" and p.tested() == c1

    pg = ""
    if db_url.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        u = make_url(db_url)
        search = u.query.get("options", "")
        pg = f"user={u.username} dbname={u.database} options='{search}'"
    script = HOSTILE.format(
        config=p.cfg_path,
        sqlite=loaded.database_url.removeprefix("sqlite:///"),
        pg=pg,
        state=loaded.state_dir,
        bare=p.bare,
        base=base,
    )
    # The regression (BUG) and the script that tries to make it pass or push itself.
    c2 = p.work.commit(
        "app: BUG, and a build script", files={"app.txt": "BUG\n", "hostile.sh": script}
    )
    p.work.push(p.bare, "HEAD:refs/heads/main")
    r2 = run_cycle(db, loaded, "app", mailer=mailer)
    assert r2.flight is not None and r2.push is not None and r2.report is not None

    # It ran, and changed nothing of pushgate's.
    logs = loaded.logs_dir
    hostile_log = "\n".join(
        f.read_text() for f in (logs / str(r2.flight)).glob("test-hostile*/*.log")
    )
    assert "hostile: start" in hostile_log and "hostile: done" in hostile_log
    assert r2.push.status == "not-pushed" and p.tested() == c1 != c2
    assert "regressions - FAIL" in r2.report.subject
    assert "PUSHED" not in r2.report.subject
    with db.read() as conn:
        statuses = conn.execute(
            text("SELECT job, status FROM steps WHERE flight = :f"), {"f": r2.flight}
        ).all()
    assert ("test-content", "fail") in [tuple(r) for r in statuses]
    refs = subprocess.run(
        ["git", f"--git-dir={p.bare}", "for-each-ref", "--format=%(refname)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "evil" not in refs
    assert not list(tmp_path.rglob("evil*"))

    # No secret anywhere: logs, mail, report text, JSON and HTML, database rows.
    html = tmp_path / "html"
    cli = [sys.executable, "-m", "pushgate.cli", "-c", str(p.cfg_path)]
    subprocess.run([*cli, "report", str(r2.flight), "--html", str(html)], check=True)
    as_json = subprocess.run(
        [*cli, "report", str(r2.flight), "--json"], capture_output=True, text=True, check=True
    ).stdout
    json.loads(as_json)
    everything = "\n".join(
        [
            _files_text(logs),
            _files_text(html),
            as_json,
            r2.report.body,
            "\n".join(str(m) for m in mailer.sent),
            p.mbox.read_text() if p.mbox.exists() else "",
            _rows(db),
        ]
    )
    for secret in [SMTP_PASSWORD, *OTHER_SECRETS.values()]:
        assert secret not in everything, secret
    # Nor what it read of the database (its own job's private artifact is elsewhere).
    assert "DBREAD-" not in hostile_log.replace("'DBREAD-'", "")
    assert "SQLite format" not in hostile_log
    assert PRIVATE not in hostile_log
    db.dispose()
