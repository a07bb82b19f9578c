"""A small real project for push-gate tests: a bare input repository, a work clone that
commits to it, and a pushgate.toml whose test steps fail on demand.

Jobs of branch `app` (5 jobs):
  build         checks the source is there
  test-content  fails while app.txt contains "BUG" (a real regression)
  test-flaky    fails once when <ctrl>/flaky exists (deletes it): an intermittent failure
  test-slow     when <ctrl>/slow exists: touches <ctrl>/slow-started and sleeps (the
                file's content in seconds, 60 if empty)
  test-other    always passes
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pushgate import config as cfgmod
from pushgate.config import Loaded
from pushgate.db import cycles as dbc
from pushgate.db import flights as dbf
from pushgate.db.engine import Database
from tests.gitrepo import Repo, make_bare, make_repo, remote_head

CONFIG = """
[state]
dir = "state"
{database}

[trees.app]
url = "{bare}"
input_ref = "main"
tested_ref = "tested"
{push_url}

[branches.app]
tree = "app"
jobs = ["build", "test-*"]
mail_to = ["App List <list@example.org>"]
mail_cc = ["cc@example.org"]
mail_bcc = ["hidden@example.org"]
bisect = {bisect}
{branch_extra}

# Steps run sandboxed: the control dir is the one place outside their own they may write.
[runner]
shared = ["{ctrl}"]

# One slot: concurrent `git worktree add` in one mirror races inside git (see the report).
[hosts.localhost]
slots = {slots}

[mail]
{mail}

[jobs.build]
steps = [{{ testid = "build", command = "test -f \\"$PUSHGATE_SRC_APP/app.txt\\"" }}]

[jobs.test-content]
buildjob = "build"
steps = [{{ testid = "check", command = "! grep -q BUG \\"$PUSHGATE_SRC_APP/app.txt\\"" }}]

[jobs.test-flaky]
buildjob = "build"
[[jobs.test-flaky.steps]]
testid = "flaky"
command = "if [ -e {ctrl}/flaky ]; then rm {ctrl}/flaky; exit 1; fi"

[jobs.test-slow]
buildjob = "build"
[[jobs.test-slow.steps]]
testid = "slow"
command = '''if [ -e {ctrl}/slow ]; then touch {ctrl}/slow-started
s=$(cat {ctrl}/slow); sleep ${{s:-60}}; fi'''

[jobs.test-other]
buildjob = "build"
steps = [{{ testid = "ok", command = "true" }}]
"""


@dataclass
class GateProject:
    base: Path
    work: Repo
    bare: Path
    ctrl: Path
    cfg_path: Path
    push_bare: Path | None = None

    def load(self) -> Loaded:
        return cfgmod.load(self.cfg_path)

    def commit(self, text: str, message: str | None = None) -> str:
        """Commit app.txt = text in the work clone and push it to the input's main."""
        sha = self.work.commit(
            message or f"app: {text.strip()[:30]}", files={"app.txt": text + "\n"}
        )
        self.work.push(self.bare, "HEAD:refs/heads/main")
        return sha

    @property
    def tested_repo(self) -> Path:
        return self.push_bare or self.bare

    def tested(self) -> str | None:
        return remote_head(self.tested_repo, "tested")

    def set_tested(self, sha: str) -> None:
        subprocess.run(
            ["git", f"--git-dir={self.tested_repo}", "update-ref", "refs/heads/tested", sha],
            check=True,
            env=_git_env(),
        )

    def flag(self, name: str, on: bool = True, content: str = "") -> None:
        p = self.ctrl / name
        if on:
            p.write_text(content)
        else:
            p.unlink(missing_ok=True)

    @property
    def mbox(self) -> Path:
        return self.base / "state" / "mail.mbox"

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pushgate.cli", "-c", str(self.cfg_path), *args]

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cli_argv(*args),
            env=_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
        )

    def spawn(
        self, *args: str, env: Mapping[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a pushgate process in its own process group (killpg kills its children)."""
        out = open(log or self.base / "spawn.log", "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(
            self.cli_argv(*args),
            env=_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            start_new_session=True,
        )


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    return env


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_TEST_")}
    env.pop("PUSHGATE_CONFIG", None)
    if extra:
        env.update(extra)
    return env


def make_gate_project(
    base: Path,
    *,
    db_url: str | None = None,
    mail: str = "",
    branch_extra: str = "",
    separate_push_repo: bool = False,
    slots: int = 1,
    bisect: bool = False,
    extra: str = "",
) -> GateProject:
    base.mkdir(parents=True, exist_ok=True)
    bare = make_bare(base / "app.git")
    work = make_repo(base / "work")
    ctrl = base / "ctrl"
    ctrl.mkdir()
    push_bare = make_bare(base / "tested.git") if separate_push_repo else None
    cfg = CONFIG.format(
        database=f'database = "{db_url}"' if db_url else "",
        bare=bare,
        ctrl=ctrl,
        mail=mail,
        branch_extra=branch_extra,
        slots=slots,
        bisect="true" if bisect else "false",
        push_url=f'push_url = "{push_bare}"' if push_bare else "",
    )
    path = base / "pushgate.toml"
    path.write_text(cfg + extra.format(bare=bare))
    return GateProject(base, work, bare, ctrl, path, push_bare)


def kill_group(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """kill -9 a process started by spawn() and everything in its process group, and wait
    until all of them are gone (reaped), as after a service manager's kill."""
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    def gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout, "the killed process group to be reaped")


def wait_for(
    cond: Callable[[], object],
    timeout: float = 60.0,
    what: str = "condition",
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def cycle_flight(
    db: Database,
    target: str,
    expected_old: str | None,
    jobs: list[dbf.NewJob] | None = None,
    built: dict[str, dict[str, str]] | None = None,
) -> int:
    """A gate cycle's flight of branch `app` made straight in the database (for push tests):
    `jobs` with their runvars, and `built` output runvars per job."""
    with db.write() as conn:
        f = dbf.create_flight(
            conn,
            branch="app",
            intended="real",
            bless_as="real",
            revisions={"app": (target, "x", expected_old)},
            new_jobs=jobs or [],
        )
        for job, values in (built or {}).items():
            dbf.set_runvars(conn, f, job, values)
        dbc.insert_cycle(
            conn,
            flight=f,
            branch="app",
            tree="app",
            mode="normal",
            target=target,
            that_revision=expected_old,
            expected_old=expected_old,
            reason="test",
        )
    return f
