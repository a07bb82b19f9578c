"""The farm's rules through the real chain: a job needing a flag no host has ends
`starved` after runner.starve_after_s and does not block a push (a real gate cycle); a
bisection's probes all run on the host the failure happened on (two hosts, same flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pushgate import config as cfgmod
from pushgate.bisect.runner import bisect
from pushgate.config import Loaded
from pushgate.daemon.cycle import run_cycle
from pushgate.db import flights as dbf
from pushgate.db import hosts as dbh
from pushgate.db.engine import Database
from pushgate.publish.mail.transport import MemoryMailer
from pushgate.run.scheduler import sync_config_hosts
from tests.flightkit import render_toml
from tests.gateproject import make_gate_project
from tests.integration.test_bisect_real import Proj, fast_import, jobs, linear

RACK_JOB = """
[jobs.test-rack]
buildjob = "build"
hostflags = ["rack9"]
steps = [{{ testid = "rack", command = "true" }}]
"""


def test_starved_job_does_not_block_the_push(tmp_path: Path) -> None:
    p = make_gate_project(tmp_path, extra=RACK_JOB)
    text = p.cfg_path.read_text()
    p.cfg_path.write_text(text.replace("[runner]\n", "[runner]\nstarve_after_s = 1\n", 1))
    loaded = p.load()
    db = Database(loaded.database_url)
    db.upgrade()
    c1 = p.commit("hello")
    r = run_cycle(db, loaded, "app", mailer=MemoryMailer())
    assert r.push is not None and r.push.status == "pushed" and p.tested() == c1
    with db.read() as conn:
        jobs_ = {j.job: j for j in dbf.get_jobs(conn, r.flight or 0)}
        [step] = dbf.get_steps(conn, r.flight or 0, "test-rack")
    assert jobs_["test-rack"].status == "starved"
    assert {j.status for n, j in jobs_.items() if n != "test-rack"} == {"pass"}
    assert step.status == "starved" and step.log is not None
    log = Path(loaded.logs_dir) / step.log
    assert "no host has flags rack9 (waited 1s)" in log.read_text()
    assert r.report is not None and "PUSHED" in r.report.subject


class TwoHosts(Proj):
    """Two hosts with the same flags, one slot each."""

    def load(self, jobspec: dict[str, Any]) -> tuple[Loaded, Database]:
        loaded, db = super().load(jobspec)
        path = self.tmp / "pushgate.toml"
        data: dict[str, Any] = {
            "state": {"dir": "state", "database": self.db_url},
            "runner": {"heartbeat_s": 0.5, "lease_s": 3, "shared": [str(self.ctl)]},
            "trees": {
                t: {"url": str(r.path), "input_ref": "main", "tested_ref": "tested"}
                for t, r in self.repos.items()
            },
            "branches": {"b": {"tree": "src", "jobs": list(jobspec)}},
            "hosts": {h: {"slots": 1, "flags": ["arch-amd64"]} for h in ("ha", "hb")},
            "jobs": jobspec,
        }
        db.dispose()
        path.write_text(render_toml(data))
        loaded = cfgmod.load(path)
        return loaded, Database(loaded.database_url)


def test_bisection_probes_run_on_the_failure_host(tmp_path: Path, db_url: str) -> None:
    p = TwoHosts(tmp_path, db_url)
    loaded, db = p.load(jobs())
    sync_config_hosts(db, loaded)
    good = p.repos["src"].head
    _, st0 = p.flight(db, loaded, {"src": good})
    assert st0 == "pass"
    shas = fast_import(p.repos["src"].path, linear(6, 4))
    # The failure happens on hb (ha, the first host, is held meanwhile).
    with db.write() as conn:
        hold = dbh.hold_host(conn, frozenset({"arch-amd64"}), 9e9, "me", "elsewhere")
    assert hold is not None and hold.host == "ha"
    f1, st1 = p.flight(db, loaded, {"src": shas[-1]})
    assert st1 == "fail"
    with db.write() as conn:
        assert dbh.release_hold(conn, "ha", "me")
    res = bisect(db, loaded, "b", "test", "check")
    assert res.outcome == "complete" and res.culprit_commit == shas[3]
    assert len(res.probe_flights) >= 3
    with db.read() as conn:
        [failed] = [j for j in dbf.get_jobs(conn, f1) if j.job == "test"]
        assert failed.runvars["host"] == "hb"
        for f in res.probe_flights:
            [probe] = [j for j in dbf.get_jobs(conn, f) if j.job == "test"]
            assert (probe.runvars["bisect_host"], probe.runvars["host"]) == ("hb", "hb"), f
