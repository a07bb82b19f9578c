"""Every example config in examples/ is valid and constructs flights for each branch."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushgate import config as cfgmod
from pushgate.run.plan import dump_flights

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    loaded = cfgmod.load(path)
    lines = dump_flights(loaded)
    for branch in loaded.branches:
        jobs = {line.split()[1] for line in lines if line.split()[0] == branch}
        assert jobs == set(loaded.branch_jobs(branch))
