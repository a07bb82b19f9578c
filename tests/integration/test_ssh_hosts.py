"""Jobs on ssh hosts: real OpenSSH servers on loopback (tests/sshd.py), each with its own
port, host key and user, SQLite and PostgreSQL."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pushgate.db import flights as dbf
from pushgate.db import hosthealth
from pushgate.db import hosts as dbh
from pushgate.paths import job_artifacts
from pushgate.run.plan import new_flight
from pushgate.run.scheduler import run_flight
from tests.flightkit import Project, make_project
from tests.sshd import SSHD, SshHost, make_hosts

pytestmark = pytest.mark.skipif(not Path(SSHD).exists(), reason="no sshd (openssh-server)")

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} Z ")


@pytest.fixture(scope="session")
def ssh_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SshHost]]:
    hosts = make_hosts(tmp_path_factory.mktemp("sshd"), 3)
    yield hosts
    for h in hosts:
        h.kill()


@pytest.fixture
def hosts(ssh_hosts: list[SshHost]) -> Iterator[list[SshHost]]:
    """The hosts, each up and with its key in its known_hosts when the test starts."""
    for h in ssh_hosts:
        if h.proc is None:
            h.start()
        # What a killed host's jobs left there.
        shutil.rmtree(h.home / "pushgate-jobs", ignore_errors=True)
        h.known_hosts.write_text(
            f"[127.0.0.1]:{h.port} {h.host_key.with_suffix('.pub').read_text()}"
        )
    yield ssh_hosts


def host_cfg(h: SshHost, flags: list[str]) -> dict[str, Any]:
    return {
        "executor": "ssh",
        "address": "127.0.0.1",
        "port": h.port,
        "user": h.user,
        "key_file": str(h.client_key),
        "known_hosts": str(h.known_hosts),
        "flags": flags,
        "connect_timeout_s": 5,
    }


def setup(
    tmp_path: Path, db_url: str, jobs: dict[str, Any], hosts: dict[str, dict[str, Any]]
) -> tuple[Project, Any, Any, int]:
    project = make_project(tmp_path, db_url)
    loaded, db = project.load(jobs, extra={"hosts": hosts})
    return project, loaded, db, new_flight(db, loaded, "b")


def step_log(loaded: Any, db: Any, flight: int, job: str, testid: str) -> str:
    with db.read() as conn:
        (st,) = [s for s in dbf.get_steps(conn, flight, job) if s.testid == testid]
    assert st.log
    return (loaded.logs_dir / st.log).read_text()


def test_flight_on_three_ssh_hosts_artifacts_move(
    tmp_path: Path, db_url: str, hosts: list[SshHost]
) -> None:
    h0, h1, h2 = hosts
    jobs = {
        "build-x": {
            "hostflags": ["build"],
            "artifacts": ["dist/*"],
            "steps": [
                {
                    "testid": "build",
                    "command": "mkdir -p dist && cp src/data.txt dist/out.txt && "
                    "echo built-by-$(id -un) >> dist/out.txt && env | sort",
                }
            ],
        },
        "test-x": {
            "buildjob": "build-x",
            "trees": [],
            "hostflags": ["test"],
            "steps": [
                {"testid": "check", "command": 'cat "$PUSHGATE_BUILD_ARTIFACTS/dist/out.txt"'},
                {"testid": "who", "command": ["id", "-un"]},
            ],
        },
        "test-arm": {
            "trees": [],
            "hostflags": ["arm"],
            "steps": [{"testid": "who", "command": 'id -un; test -z "$SSH_CONNECTION"'}],
        },
    }
    cfg_hosts = {
        "ssh-a": host_cfg(h0, ["build"]),
        "ssh-b": host_cfg(h1, ["test"]),
        "ssh-c": host_cfg(h2, ["arm"]),
    }
    _, loaded, db, flight = setup(tmp_path, db_url, jobs, cfg_hosts)
    statuses, notes = run_flight(db, loaded, flight)
    assert statuses == {"build-x": "pass", "test-x": "pass", "test-arm": "pass"}, notes
    with db.read() as conn:
        ran_on = {j.job: j.runvars["host"] for j in dbf.get_jobs(conn, flight)}
    assert ran_on == {"build-x": "ssh-a", "test-x": "ssh-b", "test-arm": "ssh-c"}

    build = step_log(loaded, db, flight, "build-x", "build")
    lines = build.splitlines()
    assert all(STAMP.match(line) for line in lines), build
    assert "run on ssh-a: /bin/sh -c" in lines[0]
    # The step's environment is the allow-list, its paths mapped to the host's.
    env = dict(line.split(" ", 3)[3].split("=", 1) for line in lines[1:-1] if "=" in line)
    assert not [k for k in env if k.startswith("SSH_") or k in ("USER", "LOGNAME", "MAIL")]
    assert env["PUSHGATE_JOB"] == "build-x" and env["PUSHGATE_FLIGHT"] == str(flight)
    assert env["HOME"].startswith(f"{h0.home}/pushgate-jobs/"), env["HOME"]
    assert env["PUSHGATE_WORKDIR"].startswith(f"{h0.home}/pushgate-jobs/")
    # The build host's artifact, kept here, reached the test host.
    kept = job_artifacts(loaded, flight, "build-x") / "dist" / "out.txt"
    assert kept.read_text() == f"42\nbuilt-by-{h0.user}\n"
    check = step_log(loaded, db, flight, "test-x", "check")
    assert f"built-by-{h0.user}" in check and "run on ssh-b" in check
    assert h1.user in step_log(loaded, db, flight, "test-x", "who")
    assert h2.user in step_log(loaded, db, flight, "test-arm", "who")
    # Nothing of these jobs is left on the hosts.
    for h in hosts:
        left = [p.name for p in (h.home / "pushgate-jobs").glob("*_*-x_*")]
        assert not left and not list((h.home / "pushgate-jobs").glob("*_test-arm_*"))


def test_background_process_gone_at_step_end(
    tmp_path: Path, db_url: str, hosts: list[SshHost]
) -> None:
    h = hosts[0]
    gone = (
        "for f in /proc/[0-9]*/cmdline; do c=$(tr '\\0' ' ' < $f 2>/dev/null); "
        'case "$c" in "sleep 1000 "|"sleep 999 ") echo "left: $c"; exit 1;; esac; done'
    )
    jobs = {
        "j": {
            "trees": [],
            "steps": [
                # One in the step's process group, one in a session of its own.
                {
                    "testid": "leave",
                    "command": "sleep 1000 >/dev/null 2>&1 & "
                    "setsid sleep 999 >/dev/null 2>&1 < /dev/null & echo left them",
                },
                {"testid": "gone", "command": gone},
                {"testid": "slow", "command": "sleep 1000", "timeout": 1, "fatal": False},
                {"testid": "gone-again", "command": gone},
            ],
        }
    }
    _, loaded, db, flight = setup(tmp_path, db_url, jobs, {"ssh-a": host_cfg(h, [])})
    statuses, notes = run_flight(db, loaded, flight)
    with db.read() as conn:
        steps = {s.testid: s.status for s in dbf.get_steps(conn, flight, "j")}
    assert steps == {"leave": "pass", "gone": "pass", "slow": "fail", "gone-again": "pass"}, (
        step_log(loaded, db, flight, "j", "gone") + step_log(loaded, db, flight, "j", "slow")
    )
    assert "timed out after 1s" in step_log(loaded, db, flight, "j", "slow")
    assert not [c for c in h.user_processes() if c.startswith(("sleep 1000", "sleep 999"))]


def test_host_killed_mid_step_job_reruns_on_another_host(
    tmp_path: Path, db_url: str, hosts: list[SshHost]
) -> None:
    h0, h1, _ = hosts
    jobs = {
        "build-y": {
            "artifacts": ["out"],
            "hostflags": ["x"],
            "steps": [
                {"testid": "build", "command": "mkdir -p out && touch out/started && sleep 4"},
                {"testid": "after", "command": "echo built > out/done"},
            ],
        }
    }
    # The first host (by name) gets the job; it is killed while the step runs.
    cfg_hosts = {"a-victim": host_cfg(h0, ["x"]), "b-spare": host_cfg(h1, ["x"])}
    project, loaded, db, flight = setup(tmp_path, db_url, jobs, cfg_hosts)

    def killer() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if list((h0.home / "pushgate-jobs").glob("*/work/out/started")):
                h0.kill()
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    statuses, notes = run_flight(db, loaded, flight)
    t.join()
    assert h0.proc is None, "the step never started on the first host"
    assert statuses == {"build-y": "pass"}, notes
    with db.read() as conn:
        (job,) = dbf.get_jobs(conn, flight)
        steps = {s.testid: s.status for s in dbf.get_steps(conn, flight, "build-y")}
        health = {h.host: h.health for h in dbh.list_hosts(conn)}
        broke = hosthealth.hosts_that_broke(conn, flight)
        events = dbh.host_events_of(conn, "a-victim")
    assert job.runvars["host"] == "b-spare" and steps == {"build": "pass", "after": "pass"}
    assert broke == {"build-y": {"a-victim"}}
    assert any(e.kind == "broke" and "lost" in e.why for e in events), events
    assert health["a-victim"] != "bad"  # one broken job is not yet a bad host
    assert any("a-victim broke it" in n for n in notes), notes
    log = step_log(loaded, db, flight, "build-y", "build")
    assert "the host's fault, not the code's" in log and "run on b-spare" in log
    assert (job_artifacts(loaded, flight, "build-y") / "out" / "done").exists()
    report = subprocess.run(
        [sys.executable, "-m", "pushgate.cli", "-c", str(project.dir / "pushgate.toml")]
        + ["report", str(flight)],
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    assert f"{flight}: all pass" in report.stdout, report.stdout
    assert "regression" not in report.stdout.lower() and "broken" not in report.stdout


def test_changed_host_key_refused_host_marked_bad(
    tmp_path: Path, db_url: str, hosts: list[SshHost]
) -> None:
    h0, h1, _ = hosts
    known = h0.known_hosts.read_text()
    h0.rekey()
    jobs = {"j": {"trees": [], "hostflags": ["x"], "steps": [{"testid": "s", "command": "true"}]}}
    cfg_hosts = {"a-rekeyed": host_cfg(h0, ["x"]), "b-good": host_cfg(h1, ["x"])}
    _, loaded, db, flight = setup(tmp_path, db_url, jobs, cfg_hosts)
    statuses, notes = run_flight(db, loaded, flight)
    assert statuses == {"j": "pass"}, notes
    with db.read() as conn:
        (job,) = dbf.get_jobs(conn, flight)
        (bad,) = [h for h in dbh.list_hosts(conn) if h.host == "a-rekeyed"]
    assert job.runvars["host"] == "b-good"
    assert bad.health == "bad" and bad.health_why and "host key" in bad.health_why
    log = step_log(loaded, db, flight, "j", "s")
    assert re.search(r"host a-rekeyed \(.*\): its host key is not the one in .*refused", log)
    assert h0.known_hosts.read_text() == known  # never trusted silently


def test_bad_ssh_host_is_health_checked_before_use(
    tmp_path: Path, db_url: str, hosts: list[SshHost]
) -> None:
    """A bad ssh host gets the health-check job, queued for it automatically, before any
    other job; passing makes it good. Down, the check breaks and the host stays bad."""
    from pushgate.run import healthcheck
    from pushgate.run.scheduler import sync_config_hosts

    h0 = hosts[0]
    jobs = {
        "hc": {"trees": [], "hostflags": ["test"], "steps": [{"testid": "c", "command": "id -un"}]},
        "j": {"trees": [], "hostflags": ["test"], "steps": [{"testid": "t", "command": "true"}]},
    }
    project = make_project(tmp_path, db_url)
    runner = {"heartbeat_s": 0.5, "lease_s": 3, "shared": [str(project.ctl)]}
    runner.update(health_check_job="hc", starve_after_s=30)
    extra = {"hosts": {"ssh-a": host_cfg(h0, ["test"])}, "runner": runner}
    loaded, db = project.load(jobs, branch_jobs=["j"], extra=extra)
    sync_config_hosts(db, loaded)

    def bad() -> None:
        with db.write() as conn:
            hosthealth.record_break(
                conn, "ssh-a", 0, "x", 0, "lost", "me", bad_after=3, bad_now=True
            )

    def health() -> tuple[str, str | None]:
        with db.read() as conn:
            [h] = dbh.list_hosts(conn)
        return h.health, h.health_why

    bad()
    flight = new_flight(db, loaded, "b")
    statuses, notes = run_flight(db, loaded, flight)
    assert statuses == {"j": "pass"}, notes
    assert health() == ("good", "health-check job hc passed")
    with db.read() as conn:
        order = [(a.flight, a.job) for a in reversed(dbh.allocations(conn, "ssh-a"))]
    assert [j for _, j in order] == ["hc", "j"] and order[1][0] == flight

    h0.kill()
    bad()
    [check], _ = healthcheck.run_checks(db, loaded, "me")
    statuses, _ = run_flight(db, loaded, check)
    assert statuses == {"hc": "broken"}  # pinned: not rerun elsewhere
    assert health() == ("bad", f"health-check flight {check}: broken, not pass")
