"""Soak: the real daemon gates a repository for hundreds of cycles under chaos.

A commit plan of random good and bad commits (a bad one writes BUG, which test-content
fails on) with random flakes (test-flaky or the build fails once) is pushed to the input
branch one commit at a time; the bench waits until the gate has dealt with each: a good
tip pushed to the tested ref (flakes may delay it, not prevent it), a bad one tested and
not pushed. Meanwhile a chaos thread kills `pushgate daemon`'s process group with
SIGKILL at random moments and starts it again, and, once each, fills the logs disk (a
tmpfs mounted for the run) until steps break and frees it, and restarts PostgreSQL.

PostgreSQL is a private cluster made for the run (initdb as the postgres user, a free
port on 127.0.0.1, data and socket dirs in the run's temp dir), never the machine's
server. Needs root (tmpfs, runuser), bubblewrap and Debian's PostgreSQL binaries.

Then it checks the record against the world:

- pushes made (push rows `pushed`) against pushes expected (the good tips of the plan);
- wrong push records: the multiset of `pushed` rows' revisions against the tested ref's
  reflog in the remote, a pushed revision whose verdict blocked or whose tree is bad, a
  row still `pending` once the daemon is stopped;
- duplicate mails (a Message-ID twice in the mbox, or one no mail_queue row has) and
  missing mails (a done cycle without its report in the mbox, a mail row not sent);
- lost step results: a step still queued/running in a finished job, a finished job
  without the step rows it should have, a job of a done cycle's flight not finished;
- disk: logs + artifacts + work dirs, sampled during the run and after a last gc,
  against keep_flights flights (plus those retention always keeps and those a gc
  interval lets finish) times the largest flight.

Usage: python bench/soak.py [--cycles N] [--kills K] [--quick] [--seed S] [--keep]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import errno
import json
import mailbox
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "app"
KEEP_FLIGHTS = 6
GC_INTERVAL_H = 0.005  # 18 s
LOGS_TMPFS_MB = 16
SETTLE_TIMEOUT_S = 240.0

CONFIG = """
[state]
dir = "{state}"
database = "{db}"
logs = "{logs}"

[trees.app]
url = "{bare}"
input_ref = "main"
tested_ref = "tested"

[branches.app]
tree = "app"
jobs = ["build", "test-*"]
mail_to = ["App List <list@example.org>"]
bisect = false

[runner]
shared = ["{ctrl}"]
heartbeat_s = 0.5
lease_s = 2

[hosts.localhost]
slots = 1

[mail]
mode = "mbox"

[retention]
keep_days = 0
keep_flights = {keep}
failed_work_days = 0
interval_h = {gc_h}

[jobs.build]
[[jobs.build.steps]]
testid = "build"
command = '''if [ -e {ctrl}/flaky-build ]; then rm -f {ctrl}/flaky-build; exit 1; fi
seq 1 1500; test -f "$PUSHGATE_SRC_APP/app.txt"'''

[jobs.test-content]
buildjob = "build"
[[jobs.test-content.steps]]
testid = "check"
command = '''seq 1 1500; ! grep -q BUG "$PUSHGATE_SRC_APP/app.txt"'''

[jobs.test-flaky]
buildjob = "build"
[[jobs.test-flaky.steps]]
testid = "flaky"
command = '''seq 1 1500; if [ -e {ctrl}/flaky ]; then rm -f {ctrl}/flaky; exit 1; fi'''
"""

STEPS_PER_JOB = {"build": 1, "test-content": 1, "test-flaky": 1}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
    return env


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=git_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the private PostgreSQL cluster ------------------------------------------------------


class PrivatePG:
    """A PostgreSQL cluster of our own: data and socket dirs under `root` (owned by the
    postgres user), listening on 127.0.0.1:<free port> only, trust authentication."""

    def __init__(self, root: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            raise SystemExit("soak: no /usr/lib/postgresql/*/bin/pg_ctl")
        self.bin = bins[-1].parent
        self.root = root
        self.data = root / "data"
        self.sock = root / "sock"
        self.port = free_port()
        self.running = False

    def _as_pg(self, *argv: str, timeout: float = 120) -> None:
        p = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if p.returncode != 0:
            raise subprocess.SubprocessError(f"{Path(argv[0]).name}: {p.stderr.strip()}")

    def init(self) -> None:
        self.sock.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.sock, "postgres", "postgres")
        self._as_pg(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        self.start()
        self._as_pg(str(self.bin / "createdb"), "-h", str(self.sock), "-p", str(self.port), "soak")

    def _opts(self) -> str:
        return (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )

    def start(self) -> None:
        self._as_pg(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
            "-o", self._opts(), "-w", "start",
        )  # fmt: skip
        self.running = True

    def restart(self) -> None:
        self._as_pg(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
            "-o", self._opts(), "-m", "fast", "-w", "restart",
        )  # fmt: skip

    def stop(self) -> None:
        if self.running:
            self._as_pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/soak"


# --- the run -----------------------------------------------------------------------------


@dataclass
class Plan:
    sha: str
    good: bool
    flake: str  # "", "test" or "build"


@dataclass
class Soak:
    base: Path
    cycles_target: int
    kills_target: int
    rng: random.Random
    pg: PrivatePG
    logs: Path = field(init=False)
    state: Path = field(init=False)
    ctrl: Path = field(init=False)
    bare: Path = field(init=False)
    work: Path = field(init=False)
    cfg: Path = field(init=False)
    plan: list[Plan] = field(default_factory=list)
    kills: int = 0
    kill_stages: Counter[str] = field(default_factory=Counter)
    daemon: subprocess.Popen[bytes] | None = None
    daemon_starts: int = 0
    daemon_crashes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    committed: threading.Event = field(default_factory=threading.Event)
    disk_filled: bool = False
    disk_freed: bool = False
    fill_broken_steps: int = 0
    pg_restarted: bool = False
    stalls: int = 0
    disk_max_bytes: int = 0
    flight_dirs_max: int = 0
    flight_bytes_max: int = 0
    chaos_error: str | None = None

    def __post_init__(self) -> None:
        self.logs = self.base / "logs"
        self.state = self.base / "state"
        self.ctrl = self.base / "ctrl"
        self.bare = self.base / "app.git"
        self.work = self.base / "work"
        self.cfg = self.base / "pushgate.toml"
        self.engine = sa.create_engine(self.pg.url, pool_pre_ping=True)

    # -- setup -----------------------------------------------------------------------------

    def setup(self) -> None:
        for d in (self.logs, self.state, self.ctrl, self.work):
            d.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={LOGS_TMPFS_MB}m,mode=0755", "soak", self.logs],
            check=True,
        )
        git(self.base, "init", "-q", "--bare", "-b", "main", str(self.bare))
        # The remote keeps a reflog of every ref update: the truth the push rows must match.
        git(self.bare, "config", "core.logAllRefUpdates", "always")
        git(self.work, "init", "-q", "-b", "main")
        self.cfg.write_text(
            CONFIG.format(
                state=self.state,
                db=self.pg.url,
                logs=self.logs,
                bare=self.bare,
                ctrl=self.ctrl,
                keep=KEEP_FLIGHTS,
                gc_h=GC_INTERVAL_H,
            )
        )

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pushgate.cli", "-c", str(self.cfg), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_")}
        env["PYTHONPATH"] = str(ROOT)
        return env

    # -- the daemon ------------------------------------------------------------------------

    def start_daemon(self) -> None:
        out = open(self.base / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "pushgate.cli", "-c", str(self.cfg), "daemon", "--poll", "0.2"],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            start_new_session=True,
        )
        out.close()
        self.daemon_starts += 1

    def kill_daemon(self) -> None:
        d = self.daemon
        assert d is not None
        try:
            os.killpg(d.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        d.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(d.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def stop_daemon(self) -> int:
        d = self.daemon
        assert d is not None
        d.send_signal(signal.SIGTERM)
        try:
            return d.wait(120)
        except subprocess.TimeoutExpired:
            self.kill_daemon()
            return -9

    # -- database --------------------------------------------------------------------------

    def q(self, sql: str, **params: Any) -> list[Any]:
        """A read, retried while PostgreSQL restarts."""
        for attempt in range(60):
            try:
                with self.engine.connect() as conn:
                    return list(conn.execute(sa.text(sql), params))
            except sa.exc.OperationalError:
                if attempt == 59:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def cycles_done(self) -> int:
        try:
            return int(self.q("SELECT count(*) FROM gate_cycles WHERE stage = 'done'")[0][0])
        except sa.exc.ProgrammingError:
            return 0  # the daemon has not made the tables yet

    # -- the commit plan -------------------------------------------------------------------

    def tested(self) -> str | None:
        p = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", "refs/heads/tested"],
            cwd=self.bare,
            env=git_env(),
            capture_output=True,
            text=True,
        )
        return p.stdout.strip() or None

    def commit(self, good: bool, flake: str) -> Plan:
        n = len(self.plan) + 1
        for f in ("flaky", "flaky-build"):
            (self.ctrl / f).unlink(missing_ok=True)
        if flake:
            (self.ctrl / ("flaky" if flake == "test" else "flaky-build")).write_text("")
        text = f"commit {n}\n" + ("BUG\n" if not good else "ok\n")
        (self.work / "app.txt").write_text(text)
        git(self.work, "add", "app.txt")
        env = git_env()
        env.update(
            GIT_AUTHOR_NAME="A U Thor",
            GIT_AUTHOR_EMAIL="author@example.com",
            GIT_COMMITTER_NAME="C O Mitter",
            GIT_COMMITTER_EMAIL="committer@example.com",
            GIT_AUTHOR_DATE=f"{1704110400 + 60 * n} +0000",
            GIT_COMMITTER_DATE=f"{1704110400 + 60 * n} +0000",
        )
        subprocess.run(
            ["git", "commit", "-q", "-m", f"app: commit {n} ({'good' if good else 'bad'})"],
            cwd=self.work,
            env=env,
            check=True,
            capture_output=True,
        )
        sha = git(self.work, "rev-parse", "HEAD").strip()
        git(self.work, "push", "-q", str(self.bare), "HEAD:refs/heads/main")
        self.committed.set()
        p = Plan(sha, good, flake)
        self.plan.append(p)
        return p

    def settled(self, p: Plan) -> bool:
        if p.good:
            return self.tested() == p.sha
        rows = self.q("SELECT 1 FROM gate_cycles WHERE target = :t AND stage = 'done'", t=p.sha)
        return bool(rows)

    def wait_settled(self, p: Plan) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not self.stop.is_set():
            if self.settled(p):
                return
            if self.chaos_error:
                raise SystemExit(f"soak: chaos thread failed: {self.chaos_error}")
            if time.monotonic() > deadline:
                self.stalls += 1
                log(f"STALL: {p.sha[:10]} ({'good' if p.good else 'bad'}) not settled")
                return
            self.sample_disk()
            time.sleep(0.3)

    # -- chaos -----------------------------------------------------------------------------

    def chaos(self) -> None:
        try:
            self._chaos()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.chaos_error = f"{type(e).__name__}: {e}"
            raise

    def _chaos(self) -> None:
        rng = random.Random(self.rng.random())
        while not self.stop.is_set():
            with self.lock:
                if self.daemon is not None and self.daemon.poll() is not None:
                    # It died by itself: a service manager would start it again.
                    self.daemon_crashes += 1
                    log(f"daemon exited by itself with status {self.daemon.returncode}")
                    self.kill_daemon()
                    self.start_daemon()
            done = self.cycles_done()
            progress = min(1.0, (done + 1) / self.cycles_target)
            allowed = math.ceil(self.kills_target * progress)
            if not self.disk_filled and progress >= 1 / 3:
                self.fill_logs_disk()
                continue
            if not self.pg_restarted and progress >= 2 / 3:
                log("chaos: restarting PostgreSQL")
                self.pg.restart()
                self.pg_restarted = True
                continue
            if self.kills < allowed:
                # A random moment after a commit: mostly inside its cycle (fetch, flight,
                # retest, push, mail, gc), sometimes between cycles.
                self.committed.wait(1.0)
                if not self.committed.is_set():
                    continue
                self.committed.clear()
                if rng.random() < 0.6:
                    # Aim inside the cycle: once its flight exists, a moment of it.
                    deadline = time.monotonic() + 2.0
                    while self.stage_now() == "between_cycles" and time.monotonic() < deadline:
                        time.sleep(0.02)
                    delay = rng.uniform(0.0, 0.8)
                else:
                    delay = rng.uniform(0.0, 1.5)
                if self.stop.wait(delay):
                    return
                with self.lock:
                    self.kill_daemon()
                    self.kills += 1
                    self.kill_stages[self.stage_now()] += 1
                    self.start_daemon()
                continue
            self.stop.wait(0.2)

    def stage_now(self) -> str:
        """Where the gate was when killed: the newest cycle's stage (`flight`, `retest`,
        `push`, `report`...), `between_cycles` (idle, fetching, making a flight) or `startup`."""
        try:
            rows = self.q("SELECT stage FROM gate_cycles ORDER BY flight DESC LIMIT 1")
        except sa.exc.ProgrammingError:
            return "startup"  # the daemon has not made the tables yet
        stage = str(rows[0][0]) if rows else "done"
        return "between_cycles" if stage == "done" else stage

    def fill_logs_disk(self) -> None:
        log("chaos: filling the logs disk")
        t0 = time.time()
        blob = self.logs / "fill.blob"
        fd = os.open(blob, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for size in (1 << 20, 4096, 1):  # to the last byte
                while True:
                    try:
                        os.write(fd, b"\0" * size)
                    except OSError as e:
                        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                            raise
                        break
        finally:
            os.close(fd)
        self.disk_filled = True
        # Hold it full until a step broke for want of space (or 30 s).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.stop.is_set():
            n = self.q(
                "SELECT count(*) FROM steps WHERE status = 'broken' AND reason LIKE '%no space%'"
                " AND finished >= :t",
                t=t0,
            )[0][0]
            if n:
                self.fill_broken_steps = int(n)
                break
            time.sleep(0.3)
        blob.unlink()
        self.disk_freed = True
        log(f"chaos: logs disk freed ({self.fill_broken_steps} step(s) broke for want of space)")

    # -- disk ------------------------------------------------------------------------------

    def disk_roots(self) -> list[Path]:
        return [self.logs, self.state / "artifacts", self.state / "work"]

    def sample_disk(self) -> None:
        per_flight: Counter[int] = Counter()
        total = 0
        for root in self.disk_roots():
            try:
                entries = list(os.scandir(root))
            except FileNotFoundError:
                continue
            for e in entries:
                if not e.name.isdigit():
                    continue
                n = du(Path(e.path))
                per_flight[int(e.name)] += n
                total += n
        self.disk_max_bytes = max(self.disk_max_bytes, total)
        self.flight_dirs_max = max(self.flight_dirs_max, len(per_flight))
        if per_flight:
            self.flight_bytes_max = max(self.flight_bytes_max, max(per_flight.values()))

    # -- the checks ------------------------------------------------------------------------

    def reflog(self) -> list[str]:
        path = self.bare / "logs" / "refs" / "heads" / "tested"
        if not path.exists():
            return []
        return [line.split()[1] for line in path.read_text().splitlines() if line.strip()]

    def check(self) -> dict[str, Any]:
        bad = {p.sha for p in self.plan if not p.good}
        pushes = self.q("SELECT flight, revision, status FROM pushes ORDER BY flight")
        pushed = [r.revision for r in pushes if r.status == "pushed"]
        blocking = {r.flight for r in self.q("SELECT flight FROM verdicts WHERE blocking")}
        moved = Counter(self.reflog())
        recorded = Counter(pushed)
        wrong = sum(((moved - recorded) + (recorded - moved)).values())
        wrong += sum(1 for r in pushes if r.status == "pushed" and r.flight in blocking)
        wrong += sum(1 for r in pushes if r.status == "pushed" and r.revision in bad)
        wrong += sum(1 for r in pushes if r.status == "pending")
        expected_tips = [p.sha for p in self.plan if p.good]
        missed_pushes = sum(1 for s in expected_tips if s not in moved)

        # Mail: the mbox against the mail rows and the done cycles.
        mbox_ids: Counter[str] = Counter()
        mbox_path = self.state / "mail.mbox"
        if mbox_path.exists():
            for m in mailbox.mbox(str(mbox_path)):
                mbox_ids[str(m["Message-ID"]).strip()] += 1
        rows = self.q("SELECT message_id, kind, flight, status FROM mail_queue")
        row_ids = {r.message_id.strip() for r in rows}
        duplicate = sum(n - 1 for n in mbox_ids.values() if n > 1)
        duplicate += sum(n for mid, n in mbox_ids.items() if mid not in row_ids)
        reports = Counter(r.flight for r in rows if r.kind == "report")
        duplicate += sum(n - 1 for n in reports.values() if n > 1)
        done = [r.flight for r in self.q("SELECT flight FROM gate_cycles WHERE stage = 'done'")]
        report_of = {r.flight: r.message_id.strip() for r in rows if r.kind == "report"}
        missing = sum(1 for f in done if report_of.get(f) not in mbox_ids)
        missing += sum(1 for r in rows if r.status != "sent")
        missing += sum(
            1 for r in rows if r.status == "sent" and r.message_id.strip() not in mbox_ids
        )

        # Step results of finished jobs.
        final = ("pass", "fail", "broken", "blocked", "starved")
        lost = 0
        step_rows = self.q(
            "SELECT j.flight, j.job, j.status AS jstatus, s.status AS sstatus FROM jobs j"
            " LEFT JOIN steps s ON s.flight = j.flight AND s.job = j.job"
        )
        by_job: dict[tuple[int, str], list[str | None]] = {}
        jstatus: dict[tuple[int, str], str] = {}
        for r in step_rows:
            by_job.setdefault((r.flight, r.job), []).append(r.sstatus)
            jstatus[(r.flight, r.job)] = r.jstatus
        finished_flights = {
            f for (f,) in self.q("SELECT flight FROM gate_cycles WHERE stage = 'done'")
        } | {
            f
            for (f,) in self.q(
                "SELECT retest_flight FROM gate_cycles WHERE stage = 'done'"
                " AND retest_flight IS NOT NULL"
            )
        }
        for key, sts in by_job.items():
            js = jstatus[key]
            real = [s for s in sts if s is not None]
            if js in final:
                lost += sum(1 for s in real if s not in final)
                if js in ("pass", "fail", "broken", "blocked") and not real:
                    lost += 1
                if js == "pass" and len(real) < STEPS_PER_JOB.get(key[1], 1):
                    lost += STEPS_PER_JOB.get(key[1], 1) - len(real)
            elif key[0] in finished_flights:
                lost += 1
        return {
            "pushes_made": len(pushed),
            "pushes_expected": len(expected_tips),
            "expected_tips_not_pushed": missed_pushes,
            "wrong_push_records": wrong,
            "duplicate_mails": duplicate,
            "missing_mails": missing,
            "mails": sum(mbox_ids.values()),
            "lost_step_results": lost,
            "flights": int(self.q("SELECT count(*) FROM flights")[0][0]),
        }

    def gc_window_flights(self) -> int:
        """The most flights created within one gc interval: what may finish between two
        of the daemon's gc runs."""
        created = sorted(float(c) for (c,) in self.q("SELECT created FROM flights"))
        win = GC_INTERVAL_H * 3600
        best, j = 0, 0
        for i, c in enumerate(created):
            while created[j] < c - win:
                j += 1
            best = max(best, i - j + 1)
        return best


def du(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path, onerror=lambda e: None):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def run(args: argparse.Namespace) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise SystemExit("soak: must run as root (tmpfs mount, a private PostgreSQL cluster)")
    if shutil.which("bwrap") is None:
        raise SystemExit("soak: needs bubblewrap (bwrap)")
    base = Path(tempfile.mkdtemp(prefix="pushgate-soak-", dir=args.tmp))
    base.chmod(0o755)
    rng = random.Random(args.seed)
    # The cluster's dirs apart, under the system's temp dir: the postgres user must reach
    # them, and --tmp may be private to root (pytest's tmp_path is).
    pg = PrivatePG(Path(tempfile.mkdtemp(prefix="pushgate-soak-pg-")))
    s = Soak(base, args.cycles, args.kills, rng, pg)
    chaos: threading.Thread | None = None
    t_start = time.monotonic()
    mounted = False
    try:
        log(f"soak in {base}: {args.cycles} cycles, {args.kills} kills, seed {args.seed}")
        pg.init()
        s.setup()
        mounted = True
        s.start_daemon()
        chaos = threading.Thread(target=s.chaos, daemon=True)
        chaos.start()
        while True:
            done = s.cycles_done()
            events = s.disk_freed and s.pg_restarted
            if done >= args.cycles and s.kills >= args.kills and events:
                if s.plan and s.plan[-1].good:
                    break
                good, flake = True, ""  # end on a good tip: the gate goes idle
            else:
                good = rng.random() < args.good
                r = rng.random()
                flake = "test" if r < args.flakes else "build" if r < 1.4 * args.flakes else ""
            p = s.commit(good, flake)
            t0 = time.monotonic()
            s.wait_settled(p)
            log(
                f"commit {len(s.plan):3d} {'good' if good else 'bad '} flake={flake or '-':5s}"
                f" settled in {time.monotonic() - t0:5.1f} s; cycles {s.cycles_done()},"
                f" kills {s.kills}"
            )
        s.stop.set()
        chaos.join(60)
        # Let the gate finish what it holds (nothing should be due), then stop it.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            open_cycles = s.q("SELECT count(*) FROM gate_cycles WHERE stage <> 'done'")[0][0]
            if not open_cycles:
                break
            time.sleep(0.5)
        rc = s.stop_daemon()
        s.sample_disk()
        gc = s.cli("gc")
        disk_after = sum(du(r) for r in s.disk_roots() if r.exists())
        figures = s.check()
        window = s.gc_window_flights()
        bound_dirs = KEEP_FLIGHTS + 3 + window
        bound_bytes = bound_dirs * s.flight_bytes_max
        daemon_log = (base / "daemon.log").read_text(errors="replace")
        out: dict[str, Any] = {
            "cycles": s.cycles_done(),
            "kills": s.kills,
            **figures,
            "disk_used_bytes": disk_after,
            "disk_max_bytes": s.disk_max_bytes,
            "disk_bound_bytes": bound_bytes,
            "disk_bounded": s.disk_max_bytes <= bound_bytes and disk_after <= bound_bytes,
            "flight_dirs_max": s.flight_dirs_max,
            "flight_dirs_bound": bound_dirs,
            "keep_flights": KEEP_FLIGHTS,
            "commits": len(s.plan),
            "good_commits": sum(1 for p in s.plan if p.good),
            "flaky_commits": sum(1 for p in s.plan if p.flake),
            "stalls": s.stalls,
            "logs_disk_filled_and_freed": s.disk_filled and s.disk_freed,
            "steps_broken_by_full_disk": s.fill_broken_steps,
            "postgres_restarted": s.pg_restarted,
            "kills_by_stage": dict(sorted(s.kill_stages.items())),
            "daemon_crashes": s.daemon_crashes,
            "daemon_tracebacks": daemon_log.count("Traceback"),
            "daemon_internal_errors": daemon_log.count("internal error"),
            "daemon_exit": rc,
            "gc_exit": gc.returncode,
            "wall_s": round(time.monotonic() - t_start, 1),
        }
        return out
    finally:
        s.stop.set()
        if s.daemon is not None and s.daemon.poll() is None:
            s.kill_daemon()
        s.engine.dispose()
        try:
            pg.stop()
        except subprocess.SubprocessError as e:
            log(f"pg_ctl stop failed: {e}")
        if mounted:
            subprocess.run(["umount", "-l", str(s.logs)], check=False)
        if args.keep:
            log(f"kept {base} and {pg.root}")
        else:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(pg.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=None, help="gate cycles to run (default 200)")
    ap.add_argument("--kills", type=int, default=None, help="kill -9s of the daemon (default 60)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 30 cycles, 8 kills")
    ap.add_argument("--good", type=float, default=0.7, help="share of good commits")
    ap.add_argument("--flakes", type=float, default=0.25, help="share of flaky commits")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--tmp", default="/var/tmp", help="where the run's temp dir goes")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args(argv)
    if args.cycles is None:
        args.cycles = 30 if args.quick else 200
    if args.kills is None:
        args.kills = 8 if args.quick else 60
    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C: the cluster is stopped, the
    # tmpfs unmounted and the temp dir removed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    out = run(args)
    width = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:<{width}}  {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
