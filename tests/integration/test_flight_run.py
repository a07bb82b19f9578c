"""Real flights on this machine: real git checkouts, real processes, SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from pushgate.db import flights as dbf
from pushgate.db.schema import host_allocations
from pushgate.run.plan import FlightError, new_flight
from pushgate.run.scheduler import run_flight
from tests.flightkit import Project, make_project

STEP = "echo step $PUSHGATE_STEPNO $PUSHGATE_TESTID"


def jobs_with_failing_build() -> dict[str, dict]:
    return {
        "build-good": {
            "artifacts": ["out/*"],
            "steps": [
                {"testid": "build", "command": "mkdir -p out && cp src/data.txt out/built.txt"}
            ],
        },
        "build-bad": {"steps": [{"testid": "build", "command": "echo compiler error; exit 1"}]},
        "test-good-a": {
            "buildjob": "build-good",
            "steps": [
                {"testid": "s1", "command": "test -f $PUSHGATE_BUILD_ARTIFACTS/out/built.txt"},
                {"testid": "s2", "command": STEP},
                {"testid": "s3", "command": "echo boom >&2; exit 3"},
                {"testid": "s4", "command": STEP},
                {"testid": "s5", "command": STEP},
                {"testid": "capture-logs", "always": True, "command": "echo captured"},
            ],
        },
        "test-good-b": {
            "buildjob": "build-good",
            "steps": [
                {"testid": "probe", "fatal": False, "command": "exit 1"},
                {
                    "testid": "env",
                    "command": 'test "$PUSHGATE_JOB" = test-good-b && '
                    'test -n "$PUSHGATE_REVISION_SRC" && '
                    'test -n "$PUSHGATE_FLIGHT" && test "$colour" = blue',
                },
            ],
            "runvars": {"colour": "blue"},
        },
        "test-bad": {"buildjob": "build-bad", "steps": [{"testid": "never", "command": "true"}]},
    }


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Project:
    return make_project(tmp_path, db_url)


def test_failing_build_blocks_its_tests_only(project: Project) -> None:
    loaded, db = project.load(jobs_with_failing_build())
    flight = new_flight(db, loaded, "b")
    statuses, notes = run_flight(db, loaded, flight)
    assert statuses == {
        "build-good": "pass",
        "build-bad": "fail",
        "test-good-a": "fail",
        "test-good-b": "pass",
        "test-bad": "blocked",
    }
    with db.read() as conn:
        steps = {(s.job, s.stepno): s for s in dbf.get_steps(conn, flight)}
        info = dbf.get_flight(conn, flight)
        jobs = {j.job: j for j in dbf.get_jobs(conn, flight)}
    assert info is not None and info.blessing == "real" and info.finished
    # blocked: one build-check(1) row, nothing else.
    assert [(k[1], s.testid, s.status) for k, s in steps.items() if k[0] == "test-bad"] == [
        (1, "build-check(1)", "blocked")
    ]
    # test-good-a: build-check(1), s1, s2, s3 fails; s4 and s5 have no rows; capture-logs ran.
    a = [(k[1], s.testid, s.status) for k, s in sorted(steps.items()) if k[0] == "test-good-a"]
    assert a == [
        (1, "build-check(1)", "pass"),
        (2, "s1", "pass"),
        (3, "s2", "pass"),
        (4, "s3", "fail"),
        (5, "capture-logs", "pass"),
    ]
    # A failing probe is recorded but does not fail the job.
    assert steps[("test-good-b", 2)].status == "fail" and not steps[("test-good-b", 2)].fatal
    # Logs: one file per step, timestamped, with the output.
    log = (loaded.logs_dir / steps[("test-good-a", 4)].log).read_text()
    assert "boom" in log and "exit status 3" in log
    # (stamped, or " boom" when the line before it stamped the same second)
    assert re.fullmatch(r"(.* Z)? boom", log.splitlines()[1])
    assert "captured" in (loaded.logs_dir / steps[("test-good-a", 5)].log).read_text()
    # Outputs: host and built revision recorded as runvars.
    rev = project.repo.head
    assert jobs["build-good"].runvars["built_revision_src"] == rev
    assert jobs["build-good"].runvars["host"] == "localhost"
    assert jobs["build-good"].runvars["artifacts"] == "out/built.txt"
    assert (loaded.artifacts_dir / str(flight) / "build-good" / "out" / "built.txt").exists()
    assert notes == []


def test_broken_exit_code_and_timeout(project: Project) -> None:
    loaded, db = project.load(
        {
            "j-broken": {
                "steps": [
                    {"testid": "a", "command": "exit 125"},
                    {"testid": "b", "command": "true"},
                ]
            },
            "j-timeout": {
                "steps": [
                    {"testid": "slow", "command": "sleep 30", "timeout": 0.5},
                    {"testid": "logs", "command": "true", "always": True},
                ]
            },
            "j-iffail": {"steps": [{"testid": "install", "command": "false", "iffail": "broken"}]},
            "j-nocmd": {"steps": [{"testid": "x", "command": ["/nonexistent/cmd"]}]},
        }
    )
    flight = new_flight(db, loaded, "b")
    statuses, _ = run_flight(db, loaded, flight)
    assert statuses == {
        "j-broken": "broken",
        "j-timeout": "fail",
        "j-iffail": "broken",
        "j-nocmd": "broken",
    }
    with db.read() as conn:
        steps = {(s.job, s.testid): s for s in dbf.get_steps(conn, flight)}
    assert ("j-broken", "b") not in steps
    assert steps[("j-timeout", "logs")].status == "pass"
    log = (loaded.logs_dir / steps[("j-timeout", "slow")].log).read_text()
    assert "timed out after 0.5s" in log


def test_slots_never_double_booked(project: Project) -> None:
    jobs = {
        f"j{i}": {"steps": [{"testid": "s", "command": "sleep 0.05"}], "trees": []}
        for i in range(12)
    }
    loaded, db = project.load(jobs, slots=3)
    flight = new_flight(db, loaded, "b")
    statuses, _ = run_flight(db, loaded, flight)
    assert set(statuses.values()) == {"pass"}
    with db.read() as conn:
        rows = conn.execute(select(host_allocations)).all()
    assert len(rows) == 12 and {r.slot for r in rows} <= {0, 1, 2}
    for slot in {r.slot for r in rows}:
        spans = sorted((r.allocated, r.released) for r in rows if r.slot == slot)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end <= start
    # At most 3 at once: no instant is covered by 4 allocations.
    points = sorted(t for r in rows for t in (r.allocated, r.released))
    for t in points:
        assert sum(1 for r in rows if r.allocated <= t < r.released) <= 3


def test_jobs_pattern_pulls_in_builds_and_rev_override(project: Project) -> None:
    first = project.repo.head
    project.repo.commit("second", files={"data.txt": "43\n"})
    loaded, db = project.load(jobs_with_failing_build())
    flight = new_flight(db, loaded, "b", jobs="test-good-b", revs={"src": first[:10]})
    with db.read() as conn:
        jobs = [j.job for j in dbf.get_jobs(conn, flight)]
        info = dbf.get_flight(conn, flight)
    assert jobs == ["build-good", "test-good-b"]
    assert info is not None and info.revisions == {"src": first}


def test_bad_rev_and_unreachable_repo_write_nothing(project: Project, tmp_path: Path) -> None:
    loaded, db = project.load(jobs_with_failing_build())
    with pytest.raises(FlightError, match="nosuchbranch"):
        new_flight(db, loaded, "b", revs={"src": "nosuchbranch"})
    with pytest.raises(FlightError, match="not a tree"):
        new_flight(db, loaded, "b", revs={"other": "main"})
    project.repo.path.rename(tmp_path / "gone")
    (loaded.git_dir / "src.git").exists() and __import__("shutil").rmtree(loaded.git_dir)
    with pytest.raises(FlightError, match="cannot fetch"):
        new_flight(db, loaded, "b")
    with db.read() as conn:
        assert dbf.max_flight(conn) == 0


def test_parallel_checkouts_of_one_mirror(project: Project) -> None:
    # Many jobs checking out the same tree at once must not trip over each other's
    # worktree registrations in the shared mirror.
    jobs = {
        f"j{i}": {"steps": [{"testid": "s", "command": "test -f src/data.txt"}]} for i in range(16)
    }
    loaded, db = project.load(jobs, slots=8)
    flight = new_flight(db, loaded, "b")
    statuses, notes = run_flight(db, loaded, flight)
    assert set(statuses.values()) == {"pass"}, (statuses, notes)
    assert not list((loaded.git_dir / "src.git" / "worktrees").glob("*"))


def test_host_flags_and_pinning(project: Project) -> None:
    jobs = {
        "pinned": {
            "trees": [],
            "runvars": {"bisect_host": "second"},
            "steps": [{"testid": "s", "command": "test $PUSHGATE_HOST = second"}],
        },
        "needs-arm": {
            "trees": [],
            "hostflags": ["arch-arm64"],
            "steps": [{"testid": "s", "command": "true"}],
        },
        "pinned-away": {
            "trees": [],
            "runvars": {"bisect_host": "gone"},
            "steps": [{"testid": "s", "command": "true"}],
        },
    }
    extra = {
        "hosts": {
            "localhost": {"slots": 2, "flags": ["arch-amd64"]},
            "second": {"slots": 1, "flags": ["arch-amd64"]},
        },
        # Starved at once, not after the default wait for a host to appear.
        "runner": {"heartbeat_s": 0.5, "lease_s": 3, "starve_after_s": 0},
    }
    loaded, db = project.load(jobs, extra=extra)
    flight = new_flight(db, loaded, "b")
    statuses, _ = run_flight(db, loaded, flight)
    assert statuses == {"pinned": "pass", "needs-arm": "starved", "pinned-away": "starved"}
    with db.read() as conn:
        steps = {s.job: s for s in dbf.get_steps(conn, flight)}
        jobs_ = {j.job: j for j in dbf.get_jobs(conn, flight)}
    assert jobs_["pinned"].host == "second"
    assert (steps["needs-arm"].testid, steps["needs-arm"].status) == ("hosts-allocate", "starved")
