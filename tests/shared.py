"""The real osstest reports in shared/, beside the repository (as CI lays it out).

A fresh clone has no shared/ beside it: tests that need the reports skip there, with the
reason, and fail under CI (CI=true), where shared/ must be present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def osstest_reports() -> Path:
    shared = REPO.parent / "shared" / "osstest-reports"
    if not shared.is_dir():
        why = f"real osstest reports not found at {shared} (shared/ beside the repository)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return shared
