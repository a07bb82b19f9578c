"""Only tested revisions are pushed: the runvars pushgate owns cannot be set in the config,
and the gate refuses to push a revision that a job of the flight (or a build it used) was
not built from, with the reason in the push record and the report."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pushgate import config as cfgmod
from pushgate.cli.main import main
from pushgate.config import ConfigError
from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from pushgate.gate.push import push_flight
from pushgate.paths import mirror
from pushgate.publish.report import push_part
from tests.gateproject import GateProject, cycle_flight, make_gate_project

CONFIG = """\
[trees.xen]
url = "/srv/xen.git"

[branches.b]
tree = "xen"
jobs = ["build-*"]

[jobs."build-{{arch}}"]
matrix = {{ arch = ["amd64"] }}
steps = [ {{ testid = "build", command = "make" }} ]
{extra}
"""


@pytest.mark.parametrize(
    "var",
    [
        "tree_xen",
        "revision_xen",
        "built_revision_xen",
        "buildjob",
        "xenbuildjob",
        "host",
        "artifacts",
    ],
)
def test_config_cannot_set_owned_runvars(tmp_path: Path, var: str) -> None:
    p = tmp_path / "pushgate.toml"
    p.write_text(CONFIG.format(extra=f'[jobs."build-{{arch}}".runvars]\n{var} = "x"\n'))
    with pytest.raises(ConfigError) as e:
        cfgmod.load(p)
    assert str(e.value).startswith(f"{p}:12: jobs.build-amd64.runvars.{var}: runvar {var!r}")
    assert "cannot be set in the config" in str(e.value) and "\n" not in str(e.value)


def test_config_cannot_make_owned_runvars_from_a_matrix(tmp_path: Path) -> None:
    p = tmp_path / "pushgate.toml"
    text = CONFIG.format(extra="").replace("build-{arch}", "build-{arch}-{host}")
    p.write_text(text.replace('arch = ["amd64"]', 'arch = ["amd64"], host = ["h1"]'))
    with pytest.raises(ConfigError, match=r":9: jobs.build-\{arch\}-\{host\}.matrix.host: runvar"):
        cfgmod.load(p)


def test_other_runvars_stay_allowed(tmp_path: Path) -> None:
    p = tmp_path / "pushgate.toml"
    text = '[jobs."build-{arch}".runvars]\nrevision = "r"\nxen_tree = "t"\nbuildjobs = "x"\n'
    p.write_text(CONFIG.format(extra=text))
    assert cfgmod.load(p).jobs["build-amd64"].runvars["xen_tree"] == "t"


def test_check_names_file_line_and_key(tmp_path: Path) -> None:
    p = tmp_path / "pushgate.toml"
    p.write_text(CONFIG.format(extra='[jobs."build-{arch}".runvars]\nrevision_xen = "abc"\n'))
    r = CliRunner().invoke(main, ["-c", str(p), "check"])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert f"{p}:12: jobs.build-amd64.runvars.revision_xen: runvar 'revision_xen'" in lines[0]


# --- the gate checks what was built -----------------------------------------------------------


def _flight_with_builds(db: Database, target: str, old: str) -> int:
    """A gate flight: build (built target), test-a using it, test-b using it."""
    jobs = [
        dbf.NewJob("build", {"revision_app": target}, {}),
        dbf.NewJob("test-a", {"revision_app": target}, {"buildjob": (None, "build")}),
        dbf.NewJob("test-b", {}, {"buildjob": (None, "build")}),
    ]
    return cycle_flight(db, target, old, jobs, {"build": {"built_revision_app": target}})


@pytest.fixture
def proj(tmp_path: Path) -> GateProject:
    return make_gate_project(tmp_path / "p")


def test_flight_built_from_the_target_is_pushed(db: Database, proj: GateProject) -> None:
    loaded = proj.load()
    c1 = proj.commit("one")
    proj.set_tested(c1)
    c2 = proj.commit("two")
    mirror(loaded, "app").fetch()
    row = push_flight(db, loaded, _flight_with_builds(db, c2, c1), tolerable=True)
    assert row.status == "pushed" and proj.tested() == c2


@pytest.mark.parametrize("where", ["build", "test-a"])
def test_differing_built_revision_is_not_pushed(
    db: Database, proj: GateProject, where: str
) -> None:
    loaded = proj.load()
    c1 = proj.commit("one")
    proj.set_tested(c1)
    c2 = proj.commit("two")
    c3 = proj.commit("three")  # the untested tip a config override would have built
    mirror(loaded, "app").fetch()
    f = _flight_with_builds(db, c2, c1)
    with db.write() as conn:
        dbf.set_runvars(conn, f, where, {"built_revision_app": c3})
    row = push_flight(db, loaded, f, tolerable=True)
    assert row.status == "refused" and proj.tested() == c1
    assert f"built_revision_app={c3}, not {c2}" in row.output
    assert row.why is not None and row.why.startswith("untested build")
    text, state = push_part(row)
    assert state is None and f"built_revision_app={c3}" in text
    # Decided once: asking again does not push either.
    assert push_flight(db, loaded, f, tolerable=True) == row and proj.tested() == c1
