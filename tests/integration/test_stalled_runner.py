"""Fenced leases (invariant 8): a runner stopped (SIGSTOP) past its lease while another
takes its job over cannot write when it resumes (SIGCONT), whether it resumes while the
new attempt runs or after it finished. No step runs twice at once, the job's record and
artifacts are the new attempt's, and the stale runner releases no slot."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from pushgate.db import flights as dbf
from pushgate.db.hosts import held_slots
from pushgate.db.schema import host_allocations, jobs
from pushgate.run.plan import new_flight
from tests.flightkit import make_project
from tests.integration.test_crash import start_run

LEASE_S = 1.5
# Each line of the step's output says which attempt printed it and when (the step's own
# clock: a stopped runner logs its steps' output only once it resumes).
TICKS = (
    'echo "begin $PUSHGATE_ATTEMPT $(date +%s.%N)"; '
    'for i in $(seq 50); do echo "tick $PUSHGATE_ATTEMPT $(date +%s.%N)"; sleep 0.05; done; '
    'echo "$PUSHGATE_ATTEMPT" > out.txt; '
    'echo "$PUSHGATE_ATTEMPT" > "$PUSHGATE_ARTIFACTS/direct.txt"'
)
# A log line: stamped "... Z text", or " text" when its second was stamped already.
LINE = re.compile(r"(?: Z |^ )(begin|tick) (\d+) ([0-9.]+)$")


def lines(log: Path) -> list[tuple[str, int, float]]:
    if not log.exists():
        return []
    out = []
    for raw in log.read_text().splitlines():
        m = LINE.search(raw)
        if m:
            out.append((m[1], int(m[2]), float(m[3])))
    return out


def wait_until(what: str, cond: object, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("resume", ["while-the-new-attempt-runs", "after-it-finished"])
def test_stalled_runner_cannot_write(tmp_path: Path, db_url: str, resume: str) -> None:
    project = make_project(tmp_path, db_url)
    jobs_cfg = {
        "j": {
            "trees": [],
            "artifacts": ["out.txt"],
            "steps": [
                {"testid": "work", "command": TICKS},
                {"testid": "after", "command": "true"},
            ],
        }
    }
    extra = {"runner": {"heartbeat_s": 0.2, "lease_s": LEASE_S}}
    cfg = project.config(jobs_cfg, slots=1, extra=extra)
    loaded, db = project.load(jobs_cfg, slots=1, extra=extra)
    flight = new_flight(db, loaded, "b")
    log = loaded.logs_dir / str(flight) / "j" / "1.work.log"

    stale = start_run(cfg, flight)
    wait_until("the first attempt's step", lambda: any(k == "tick" for k, _, _ in lines(log)))
    stale.send_signal(signal.SIGSTOP)
    try:
        first = lines(log)[0][1]
        time.sleep(LEASE_S + 0.5)
        new = start_run(cfg, flight)
        if resume == "after-it-finished":
            _, new_err = new.communicate(timeout=60)
            assert new.returncode == 0, new_err
        else:
            wait_until(
                "the new attempt's step",
                lambda: any(a != first and k == "begin" for k, a, _ in lines(log)),
            )
    finally:
        stale.send_signal(signal.SIGCONT)
    _, stale_err = stale.communicate(timeout=60)
    if resume != "after-it-finished":
        _, new_err = new.communicate(timeout=60)
        assert new.returncode == 0, new_err
    assert stale.returncode == 0, stale_err

    seen = lines(log)
    second = next(a for k, a, _ in seen if k == "begin" and a != first)
    began = next(t for k, a, t in seen if k == "begin" and a == second)
    # No step ran twice at once: the first attempt's step printed nothing once the
    # second's had begun (it was killed when the job was taken over).
    assert [t for _, a, t in seen if a == first and t >= began] == []
    assert {a for _, a, _ in seen} == {first, second}

    with db.read() as conn:
        job = conn.execute(select(jobs).where(jobs.c.flight == flight)).one()
        steps = dbf.get_steps(conn, flight, "j")
        allocs = conn.execute(
            select(host_allocations).where(host_allocations.c.flight == flight)
        ).all()
        held = held_slots(conn)
        info = dbf.get_flight(conn, flight)
    # The record is the second attempt's, untouched by the stale runner.
    assert job.status == "pass" and job.attempt == second
    assert [(s.testid, s.status) for s in steps] == [("work", "pass"), ("after", "pass")]
    assert all(s.started >= began - 1 for s in steps)
    assert info is not None and info.blessing == "real"
    # So are the artifacts: the second attempt's files, and no other attempt's dirs.
    arts = loaded.artifacts_dir / str(flight)
    assert (arts / "j" / "out.txt").read_text().strip() == str(second)
    assert (arts / "j" / "direct.txt").read_text().strip() == str(second)
    assert sorted(p.name for p in arts.iterdir()) == ["j"]
    # Slots: the first attempt's was released when the job was taken over, the second's
    # by the second runner once the job had ended (not by the stale runner, while held).
    by_attempt = {a.attempt: a for a in allocs}
    assert sorted(by_attempt) == [first, second]
    last_step = max(s.finished for s in steps if s.finished is not None)
    assert by_attempt[first].released is not None
    assert by_attempt[first].released <= by_attempt[second].allocated
    assert by_attempt[second].released >= last_step
    assert held == []
    # The stale runner said why it stopped.
    assert b"lease lost" in stale_err
