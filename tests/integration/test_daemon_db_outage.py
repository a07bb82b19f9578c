"""The daemon outlives its database going away (a PostgreSQL restart: a few seconds of
'connection refused'): it logs a line, waits a poll and goes on. It used to die with an
internal error, so a restart of the database server stopped the gate for good
(bench/soak.py found it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from pushgate.daemon import loop
from pushgate.db.engine import Database
from tests.gateproject import make_gate_project


def test_daemon_waits_out_an_unreachable_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = make_gate_project(tmp_path)
    c1 = p.commit("one")
    loaded = p.load()
    db = Database(loaded.database_url)
    db.upgrade()
    refused = {"n": 2}
    real_deliver_due = loop.deliver_due

    def deliver_due(*args: Any, **kwargs: Any) -> Any:
        if refused["n"]:
            refused["n"] -= 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        return real_deliver_due(*args, **kwargs)

    monkeypatch.setattr(loop, "deliver_due", deliver_due)
    d = loop.Daemon(db, loaded, poll_s=0.05, once=True)
    with caplog.at_level(logging.WARNING, logger="pushgate.daemon.loop"):
        rc = d.run()
    db.dispose()
    assert rc == 0
    assert p.tested() == c1
    outages = [r.getMessage() for r in caplog.records if "database unreachable" in r.getMessage()]
    assert len(outages) == 2, outages
