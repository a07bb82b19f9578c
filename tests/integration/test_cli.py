"""The `pushgate` command as a user runs it: one-line errors, nothing written, real output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flightkit import Project, make_project

JOBS = {
    "build-x": {
        "artifacts": ["out"],
        "steps": [{"testid": "build", "command": "mkdir out && echo built > out/x"}],
    },
    "test-x": {
        "buildjob": "build-x",
        "steps": [
            {"testid": "run", "command": "cat $PUSHGATE_BUILD_ARTIFACTS/out/x"},
            {"testid": "capture-logs", "always": True, "command": "true"},
        ],
    },
}


def pg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushgate.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path, f"sqlite:///{tmp_path}/state/pushgate.db")


def test_check_new_run_show(project: Project) -> None:
    cfg = str(project.config(JOBS))
    r = pg("-c", cfg, "check")
    assert r.returncode == 0 and "build-x: 1 steps" in r.stdout and "test-x: 2 steps" in r.stdout
    r = pg("-c", cfg, "flight", "new", "b")
    assert r.returncode == 0, r.stderr
    n = int(r.stdout.strip())
    r = pg("-c", cfg, "flight", "run", str(n))
    assert r.returncode == 0, r.stderr
    assert "test-x: pass" in r.stdout and "outcome: all pass" in r.stdout
    r = pg("-c", cfg, "flight", "show", str(n), "--json")
    data = json.loads(r.stdout)
    assert data["flight"] == n and data["outcome"] == "all pass"
    assert [s["testid"] for s in data["jobs"][1]["steps"]] == [
        "build-check(1)",
        "run",
        "capture-logs",
    ]
    assert data["revisions"] == {"src": project.repo.head}
    r = pg("-c", cfg, "flight", "list")
    assert r.returncode == 0 and "all pass" in r.stdout
    # A second flight gets a higher number.
    assert int(pg("-c", cfg, "flight", "new", "b").stdout) == n + 1


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda t: t.replace('[trees."src"]', '[trees."src"\n'), "invalid TOML"),
        (
            lambda t: t.replace('input_ref = "main"', 'input_ref = "main"\nbogus = 1'),
            "trees.src.bogus: unknown key",
        ),
        (
            lambda t: t.replace('buildjob = "build-x"', 'buildjob = "build-y"'),
            "'build-y' does not exist",
        ),
        (lambda t: re.sub(r'url = ".*"\n', "", t), "trees.src.url"),
        (
            # build-x now needs test-x, which needs build-x.
            lambda t: t.replace('[jobs."build-x"]\n', '[jobs."build-x"]\nbuildjob = "test-x"\n'),
            "cycle",
        ),
        (
            lambda t: t.replace('jobs = ["build-x", "test-x"]', 'jobs = ["build-x", "nope"]'),
            "nope",
        ),
    ],
)
def test_config_errors_are_one_line_and_write_nothing(
    project: Project, mutate: object, expect: str
) -> None:
    cfg = project.config(JOBS)
    cfg.write_text(mutate(cfg.read_text()))  # type: ignore[operator]
    for args in (["check"], ["flight", "new", "b"]):
        r = pg("-c", str(cfg), *args)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0] and str(cfg) in lines[0], r.stderr
    assert not (project.dir / "state").exists()


def test_bad_rev_unknown_branch_unreachable_repo(project: Project, tmp_path: Path) -> None:
    cfg = str(project.config(JOBS))
    r = pg("-c", cfg, "flight", "new", "b", "--rev", "src=no-such-ref")
    assert r.returncode == 2 and "no-such-ref" in r.stderr and len(r.stderr.splitlines()) == 1
    r = pg("-c", cfg, "flight", "new", "b", "--rev", "src=--upload-pack=x")
    assert r.returncode == 2 and "--upload-pack" in r.stderr
    r = pg("-c", cfg, "flight", "new", "nobranch")
    assert r.returncode == 2 and "no such branch" in r.stderr
    project.repo.path.rename(tmp_path / "moved")
    import shutil

    shutil.rmtree(project.dir / "state" / "git", ignore_errors=True)
    r = pg("-c", cfg, "flight", "new", "b")
    assert r.returncode == 2 and "cannot fetch tree src" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (project.dir / "state" / "pushgate.db").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    r = pg("flight", "list", cwd=tmp_path)
    assert r.returncode == 2 and "pushgate.toml" in r.stderr and "not found" in r.stderr


def test_demo_runs(tmp_path: Path) -> None:
    r = pg("demo", str(tmp_path / "demo"), "-q")
    assert r.returncode == 0, r.stderr
    assert "flight 1" in r.stdout
    assert (tmp_path / "demo" / "pushgate.toml").exists()


def test_check_dump_flights(project: Project) -> None:
    cfg = str(project.config(JOBS))
    r = pg("-c", cfg, "check", "--dump-flights")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "b test-x buildjob=build-x" in lines
    assert "b build-x revision_src=<src>" in lines
    assert not (project.dir / "state").exists()  # construction only, nothing fetched or written


def test_error_text_is_printed_literally(tmp_path: Path) -> None:
    cfg = tmp_path / "pushgate.toml"
    cfg.write_text(
        '[trees."[bold]x"]\nurl = "u"\n[jobs.j]\nsteps = [{testid = "t", command = "true"}]\n'
    )
    r = pg("-c", str(cfg), "check")
    assert r.returncode == 2 and "invalid name '[bold]x'" in r.stderr
