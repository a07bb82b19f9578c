"""Config loading: matrix expansion, defaults, and one-line errors naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushgate import config as cfgmod
from pushgate.config import ConfigError

GOOD = """
[trees.xen]
url = "/srv/xen.git"
input_ref = "staging"
tested_ref = "master"

[branches.xen-unstable]
tree = "xen"
jobs = ["build-*", "test-*"]

[jobs."build-{arch}"]
matrix = { arch = ["amd64", "i386"] }
artifacts = ["dist/*"]
steps = [ { testid = "xen-build", command = "make ARCH={arch}" } ]

[jobs."test-{arch}-xl"]
matrix = { arch = ["amd64", "i386"] }
buildjob = "build-{arch}"
hostflags = ["arch-{arch}"]
steps = [
  { testid = "xen-boot", command = ["true"] },
  { testid = "capture-logs", command = ["true"], always = true },
]
"""


def load_text(tmp_path: Path, text: str) -> cfgmod.Loaded:
    p = tmp_path / "pushgate.toml"
    p.write_text(text)
    return cfgmod.load(p)


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_text(tmp_path, text)
    assert "\n" not in str(e.value)
    return e.value


def test_matrix_expands_names_fields_and_runvars(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, GOOD)
    assert list(loaded.jobs) == ["build-amd64", "build-i386", "test-amd64-xl", "test-i386-xl"]
    assert loaded.jobs["test-i386-xl"].buildjob == "build-i386"
    assert loaded.jobs["test-i386-xl"].hostflags == ["arch-i386"]
    assert loaded.jobs["build-i386"].steps[0].command == "make ARCH=i386"
    assert loaded.jobs["build-amd64"].runvars == {"arch": "amd64"}
    assert loaded.branch_jobs("xen-unstable") == list(loaded.jobs)
    assert loaded.database_url == f"sqlite:///{tmp_path / 'state' / 'pushgate.db'}"
    assert loaded.cfg.hosts["localhost"].slots >= 1


def test_invalid_toml_names_line(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[trees.x]\nurl = \n")
    assert e.line == 2 and "invalid TOML" in str(e) and str(tmp_path) in str(e)


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    text = GOOD.replace('tested_ref = "master"', 'tested_ref = "master"\ncolour = "blue"')
    e = error_of(tmp_path, text)
    assert e.key == "trees.xen.colour" and "unknown key" in str(e)
    assert text.splitlines()[e.line - 1].startswith("colour") if e.line else False


def test_missing_tree_url(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace('url = "/srv/xen.git"\n', ""))
    assert e.key == "trees.xen.url" and "missing" in str(e)
    assert e.line == 2  # the [trees.xen] header


def test_missing_buildjob(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace('buildjob = "build-{arch}"', 'buildjob = "build-arm"'))
    assert "build-arm" in str(e) and e.key.startswith("jobs.test-") and e.line


def test_buildjob_cycle(tmp_path: Path) -> None:
    text = (
        GOOD + '\n[jobs.a]\nbuildjob = "b"\nsteps = [{testid="x", command="true"}]\n'
        '[jobs.b]\nbuildjob = "a"\nsteps = [{testid="x", command="true"}]\n'
    )
    e = error_of(tmp_path, text)
    assert "cycle" in str(e) and ("a -> b -> a" in str(e) or "b -> a -> b" in str(e))


def test_branch_naming_missing_job(tmp_path: Path) -> None:
    e = error_of(
        tmp_path,
        GOOD.replace('jobs = ["build-*", "test-*"]', 'jobs = ["build-*", "test-*", "smoke-*"]'),
    )
    assert e.key == "branches.xen-unstable.jobs" and "smoke-*" in str(e)
    assert e.line == 9


def test_branch_missing_dependency_build(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace('jobs = ["build-*", "test-*"]', 'jobs = ["test-*"]'))
    assert "needs buildjob" in str(e)


def test_matrix_placeholder_mismatch(tmp_path: Path) -> None:
    e = error_of(
        tmp_path,
        GOOD.replace(
            'matrix = { arch = ["amd64", "i386"] }\nartifacts',
            'matrix = { cpu = ["amd64"] }\nartifacts',
        ),
    )
    assert "placeholders" in str(e)


def test_duplicate_testid_and_bad_names(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace('{ testid = "capture-logs"', '{ testid = "xen-boot"'))
    assert "duplicate testid" in str(e)
    e = error_of(
        tmp_path,
        GOOD.replace("[trees.xen]", '[trees."x y"]').replace('tree = "xen"', 'tree = "x y"'),
    )
    assert "invalid name" in str(e)


def test_bad_cron_schedule(tmp_path: Path) -> None:
    e = error_of(tmp_path, GOOD.replace('tree = "xen"', 'tree = "xen"\nschedule = "every day"'))
    assert e.key == "branches.xen-unstable.schedule"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        cfgmod.load(tmp_path / "nope.toml")


def test_config_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUSHGATE_CONFIG", raising=False)
    assert cfgmod.config_path(None) == tmp_path / "pushgate.toml"
    monkeypatch.setenv("PUSHGATE_CONFIG", "/etc/pg.toml")
    assert cfgmod.config_path(None) == Path("/etc/pg.toml")
    assert cfgmod.config_path("x.toml") == Path("x.toml")
