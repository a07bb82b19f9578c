"""Issue 11, items 1, 2, 4 through real flights: the step environment is an allow-list,
artifacts never follow a link out of the work dir, runner.isolation = "none" is
recorded on every job, and pushgate refuses to run steps it cannot isolate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pushgate.db import flights as dbf
from pushgate.run import isolation
from pushgate.run.plan import new_flight
from pushgate.run.scheduler import run_flight
from tests.conftest import PG_URL
from tests.flightkit import make_project

ALLOWED = {"PATH", "HOME", "TMPDIR", "LANG", "TZ", "PWD", "SHLVL", "_"}


def test_a_step_sees_an_allow_list_of_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_bin = os.path.join(sys.prefix, "bin")
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    for k in ("SMTP_PASSWORD", "SSH_AUTH_SOCK", "AWS_SECRET_ACCESS_KEY", "PUSHGATE_TEST_PG"):
        monkeypatch.setenv(k, "secret-" + k)
    monkeypatch.setenv("LC_TIME", "C")
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    jobs = {
        "j": {
            "trees": [],
            "env": {"CC": "gcc-12", "SHARED": "job"},
            "runvars": {"flavour": "x"},
            "artifacts": ["env.txt"],
            "steps": [{"testid": "env", "command": "env > env.txt; echo $HOME > home.txt"}],
        }
    }
    extra = {"hosts": {"localhost": {"slots": 1, "env": {"SHARED": "host", "HOSTVAR": "h"}}}}
    loaded, db = project.load(jobs, extra=extra)
    flight = new_flight(db, loaded, "b")
    statuses, _ = run_flight(db, loaded, flight)
    assert statuses == {"j": "pass"}
    env = dict(
        line.split("=", 1)
        for line in (loaded.artifacts_dir / str(flight) / "j" / "env.txt").read_text().splitlines()
        if "=" in line
    )
    assert "secret" not in " ".join(env.values())
    unexpected = {
        k
        for k in env
        if k not in ALLOWED
        and not k.startswith(("PUSHGATE_", "LC_"))
        and k not in ("CC", "SHARED", "HOSTVAR", "flavour")
        and k not in ("tree_src", "revision_src")
    }
    assert unexpected == set()
    assert env["CC"] == "gcc-12" and env["SHARED"] == "job" and env["HOSTVAR"] == "h"
    assert env["flavour"] == "x" and env["LC_TIME"] == "C"
    assert venv_bin not in env["PATH"].split(":") and "/usr/bin" in env["PATH"]
    # A HOME and TMPDIR of the job's own (one dir), gone when it ended.
    # (one per attempt of the job: j@1, since the fenced leases)
    assert re.search(r"/tmp/\d+/j@1$", env["HOME"]) and env["TMPDIR"] == env["HOME"]
    assert not Path(env["HOME"]).exists()
    with db.read() as conn:
        [job] = dbf.get_jobs(conn, flight)
    assert isolation.NOT_ISOLATED_RUNVAR not in job.runvars  # isolated: nothing to say


def test_artifacts_never_follow_a_link_out_of_the_work_dir(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("SECRET")
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    script = (
        f"mkdir -p out/sub; echo in > out/file; ln -s file out/inlink; "
        f"ln -s {outside} out/dirlink; ln -s {outside}/secret out/filelink; "
        f"ln -s {outside}/secret out/sub/deep; ln -s {outside} linkdir"
    )
    jobs = {
        "j": {
            "trees": [],
            "artifacts": ["out", "out/**", "linkdir/*"],
            "steps": [{"testid": "make", "command": script}],
        }
    }
    extra = {"runner": {"heartbeat_s": 0.5, "lease_s": 3, "isolation": "none"}}
    loaded, db = project.load(jobs, extra=extra)
    flight = new_flight(db, loaded, "b")
    statuses, _ = run_flight(db, loaded, flight)
    assert statuses == {"j": "pass"}
    arts = loaded.artifacts_dir / str(flight) / "j"
    kept = {str(p.relative_to(arts)) for p in arts.rglob("*")}
    assert (arts / "out" / "file").read_text() == "in\n"
    assert os.readlink(arts / "out" / "inlink") == "file"  # a link inside stays a link
    for path in arts.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert "SECRET" not in path.read_text(), path
    assert "out/dirlink" not in kept and "out/filelink" not in kept
    assert "out/sub/deep" not in kept and not any(k.startswith("linkdir") for k in kept)
    log = (loaded.logs_dir / str(flight) / "j" / "1.make.log").read_text()
    for rel in ("out/dirlink", "out/filelink", "out/sub/deep", "linkdir/secret"):
        assert f"artifact '{rel}' not kept" in log, rel


def test_unisolated_steps_are_recorded_on_every_job(tmp_path: Path) -> None:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    jobs = {"a": {"trees": [], "steps": [{"testid": "s", "command": "true"}]}}
    extra = {"runner": {"heartbeat_s": 0.5, "lease_s": 3, "isolation": "none"}}
    loaded, db = project.load(jobs, extra=extra)
    flight = new_flight(db, loaded, "b")
    run_flight(db, loaded, flight)
    with db.read() as conn:
        [job] = dbf.get_jobs(conn, flight)
    assert job.runvars[isolation.NOT_ISOLATED_RUNVAR] == isolation.NOT_ISOLATED_VALUE


def test_without_bwrap_no_step_runs_and_one_line_says_why(tmp_path: Path) -> None:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    jobs = {"a": {"trees": [], "steps": [{"testid": "s", "command": "true"}]}}
    cfg = project.config(jobs)
    loaded, db = project.load(jobs)
    flight = new_flight(db, loaded, "b")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
    env["PATH"] = str(tmp_path / "empty")  # no bwrap on it
    out = subprocess.run(
        [sys.executable, "-m", "pushgate.cli", "-c", str(cfg), "flight", "run", str(flight)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "bwrap is not installed" in out.stderr
    assert 'runner.isolation = "none"' in out.stderr
    with db.read() as conn:
        assert dbf.get_steps(conn, flight) == []


def test_a_job_on_the_network_needs_a_database_steps_cannot_enter(tmp_path: Path) -> None:
    project = make_project(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    jobs = {"a": {"trees": [], "network": True, "steps": [{"testid": "s", "command": "true"}]}}
    loaded, _ = project.load(jobs)
    isolation.check(loaded, loaded.database_url, True)  # SQLite: hidden like the state dir
    try:
        import psycopg

        psycopg.connect(PG_URL.replace("+psycopg", ""), connect_timeout=3).close()
    except Exception:  # noqa: BLE001 - any connection failure
        pytest.skip("PostgreSQL unreachable")
    with pytest.raises(isolation.IsolationError, match="without a password"):
        isolation.check(loaded, PG_URL, True)
    isolation.check(loaded, PG_URL, False)  # off the network: out of reach


@pytest.mark.parametrize(
    ("extra", "key", "says"),
    [
        ({"runner": {"shared": ["state/work"]}}, "runner.shared.0", "state dir"),
        ({"runner": {"shared": ["."]}}, "runner.shared.0", "holds its config"),
        ({"runner": {"isolation": "chroot"}}, "runner.isolation", ""),
        (
            {"hosts": {"localhost": {"env": {"PUSHGATE_X": "1"}}}},
            "hosts.localhost.env",
            "PUSHGATE_",
        ),
        ({"hosts": {"localhost": {"env": {"A-B": "1"}}}}, "hosts.localhost.env.A-B", "invalid"),
    ],
)
def test_config_keeps_shared_dirs_and_env_names_sane(
    tmp_path: Path, extra: dict[str, object], key: str, says: str
) -> None:
    from pushgate import config as cfgmod

    project = make_project(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    jobs = {"a": {"trees": [], "steps": [{"testid": "s", "command": "true"}]}}
    path = project.config(jobs, extra=extra)
    with pytest.raises(cfgmod.ConfigError) as e:
        cfgmod.load(path)
    assert key in str(e.value) and says in str(e.value)
    assert str(e.value).count("\n") == 0
