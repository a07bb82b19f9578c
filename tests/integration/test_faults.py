"""Faults are states, not tracebacks (issue 12, item 5): a new database first used by
several processes at once, a full logs disk, and every PostgreSQL connection of pushgate
dropped in the middle of a flight."""

from __future__ import annotations

import subprocess
import sys
import time

from pushgate.db.engine import SCHEMA_HEAD

# Processes that open one new database at the same moment (after a barrier time).
_OPEN_DB = """
import sys, time
from pushgate.db.engine import open_db
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
db = open_db(sys.argv[1])
print(db.schema_version())
"""


def test_new_database_first_used_by_several_processes_at_once(db_url: str) -> None:
    """Migrations run under a lock: every process gets the schema, none fails with
    'database is locked' (SQLite) or DuplicateTable (PostgreSQL)."""
    start = time.time() + 2.0  # the interpreters' start-up is over by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_DB, db_url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert out.strip() == SCHEMA_HEAD
