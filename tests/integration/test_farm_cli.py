"""The farm commands as a user runs them: `hosts`, `hosts set-health`, `hosts history`,
`hosts allocate FLAGS --for`, `hosts release`, `queue`, `workers`; their output, exit 0,
and bad input as one line on stderr with exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.flightkit import Project, make_project
from tests.integration.test_bad_input import assert_one_line, invoke, row_counts

JOBS = {"j": {"trees": [], "hostflags": ["x"], "steps": [{"testid": "t", "command": "true"}]}}
HOSTS = {"h1": {"slots": 1, "flags": ["x", "y"]}, "h2": {"slots": 2, "flags": ["x"]}}
RUNNER = {"heartbeat_s": 0.5, "lease_s": 3, "isolation": "none"}


@pytest.fixture
def cfg(tmp_path: Path) -> tuple[Project, str]:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/state/pushgate.db")
    path = project.config(JOBS, extra={"hosts": HOSTS, "runner": RUNNER})
    return project, str(path)


def ok(*args: str) -> str:
    r = invoke(*args)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return r.stdout


def test_hosts_health_holds_history(cfg: tuple[Project, str]) -> None:
    project, c = cfg
    out = ok("-c", c, "hosts")
    assert "h1" in out and "h2" in out and "x,y" in out and "unknown" in out and "idle" in out

    assert ok("-c", c, "hosts", "set-health", "h2", "maintenance", "--why", "fan") == (
        "h2: maintenance\n"
    )
    assert "maintenance (fan)" in ok("-c", c, "hosts")
    # h2 is in maintenance: the hold takes h1, the one healthy host with flag x.
    out = ok("-c", c, "hosts", "allocate", "x", "--for", "2h", "--by", "alice", "--why", "debug")
    assert out.startswith("h1: held until ")
    assert "held by alice" in ok("-c", c, "hosts")
    history = ok("-c", c, "hosts", "history", "h1")
    assert "hold " in history and "by alice: debug" in history
    assert "health maintenance by " in ok("-c", c, "hosts", "history", "h2")
    assert ok("-c", c, "hosts", "release", "h1", "--by", "alice") == "h1: released\n"
    assert "release idle by alice" in ok("-c", c, "hosts", "history", "h1")

    before = row_counts(project.db_url)
    for args, what in [
        (("hosts", "set-health", "nosuch", "good", "--why", "x"), ("nosuch",)),
        (("hosts", "set-health", "h1", "sick", "--why", "x"), ("sick",)),
        (("hosts", "set-health", "h1", "good"), ("--why",)),
        (("hosts", "history", "nosuch"), ("nosuch",)),
        (("hosts", "allocate", "x", "--for", "soon"), ("soon",)),
        (("hosts", "allocate", "x", "--for", "0"), ("positive",)),
        (("hosts", "allocate", "nosuchflag", "--for", "1h"), ("nosuchflag",)),
        (("hosts", "allocate", "x"), ("--for",)),
        (("hosts", "release", "h1"), ("not held",)),
        (("hosts", "release", "nosuch"), ("nosuch",)),
    ]:
        assert_one_line(invoke("-c", c, *args), *what)
    assert row_counts(project.db_url) == before


def test_queue_and_workers(cfg: tuple[Project, str]) -> None:
    _, c = cfg
    assert "flight" in ok("-c", c, "queue")  # the header, nothing waits
    ok("-c", c, "flight", "new", "b")
    out = ok("-c", c, "queue")
    assert " j " in out and " x " in out and "host" in out and "now" in out
    out = ok("-c", c, "workers")
    assert "worker" in out and "stopped" not in out
    ok("-c", c, "flight", "run", "1", "-q")
    assert " j " not in ok("-c", c, "queue")
    assert "stopped" in ok("-c", c, "workers")
    assert_one_line(invoke("-c", c, "workers", "--bogus"), "--bogus")
    assert_one_line(invoke("-c", c, "queue", "extra"), "extra")
