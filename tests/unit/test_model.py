"""Status roll-up and the outcome word (osstest §3.4, §4.2)."""

from __future__ import annotations

import pytest

from pushgate.model import Status, flight_outcome, job_rollup


@pytest.mark.parametrize(
    "steps, expect",
    [
        ([], "pass"),
        ([("pass", True), ("pass", True)], "pass"),
        ([("pass", True), ("fail", True), ("pass", True)], "fail"),
        ([("fail", False), ("pass", True)], "pass"),  # a probe's failure does not fail the job
        ([("broken", True)], "broken"),
        ([("fail", True), ("broken", True)], "fail"),  # the first fatal failure decides
        ([("blocked", True)], "blocked"),
        ([("starved", True)], "starved"),
        ([("skip", True), ("pass", True)], "pass"),
    ],
)
def test_job_rollup(steps: list[tuple[str, bool]], expect: str) -> None:
    assert job_rollup(steps) == Status(expect)


@pytest.mark.parametrize(
    "statuses, expect",
    [
        (["pass", "pass"], "all pass"),
        (["fail"], "ALL FAIL"),
        (["blocked", "fail", "pass"], "FAIL"),  # osstest-reports/ovmf-167324.txt
        (["fail", "pass"], "FAIL"),
        (["blocked", "pass"], "FAIL"),
        (["fail", "pass", "starved"], "trouble: fail/pass/starved"),  # xen-4.14-testing-152124
        (["blocked", "fail"], "trouble: blocked/fail"),
        (["pass", "starved"], "trouble: pass/starved"),
    ],
)
def test_flight_outcome(statuses: list[str], expect: str) -> None:
    assert flight_outcome(statuses) == expect
