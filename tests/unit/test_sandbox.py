"""A job's bubblewrap sandbox on the local executor: what its steps can and cannot reach."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushgate.run.executors.base import Sandbox, StepOutcome, StepRun
from pushgate.run.executors.local import LocalExecutor
from pushgate.run.executors.sandbox import bwrap_path
from tests.procs import alive as procs_alive

pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bwrap is not installed")
ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Not under /tmp: the sandbox's own /tmp would hide it whole, and hide what the
    tests want to see hidden by the sandbox's rules."""
    d = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="pushgate-sandbox-test-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def layout(tmp: Path) -> dict[str, Path]:
    d = {
        "state": tmp / "state",
        "work": tmp / "state" / "work" / "1" / "j",
        "other": tmp / "state" / "work" / "1" / "k",
        "arts": tmp / "state" / "artifacts" / "1" / "j",
        "dep": tmp / "state" / "artifacts" / "1" / "b",
        "tmp": tmp / "state" / "tmp" / "1" / "j",
        "conf": tmp / "conf",
    }
    for p in d.values():
        p.mkdir(parents=True, exist_ok=True)
    (d["state"] / "pushgate.db").write_text("DATABASE")
    (d["other"] / "theirs").write_text("OTHER JOB")
    (d["dep"] / "built").write_text("BUILT")
    (d["conf"] / "pushgate.toml").write_text("CONFIG")
    (tmp / "password").write_text("PASSWORD")
    return d


def sandbox(d: dict[str, Path], tmp: Path, network: bool = False) -> Sandbox:
    return Sandbox(
        key="t",
        writable=(str(d["work"]), str(d["arts"]), str(d["tmp"])),
        readonly=(str(d["dep"]),),
        hidden=(str(d["state"]), str(d["conf"])),
        hidden_files=(str(tmp / "password"),),
        network=network,
    )


def steps(sb: Sandbox, cwd: Path, log: Path, *scripts: str) -> list[StepOutcome]:
    async def go() -> list[StepOutcome]:
        ex = LocalExecutor()
        try:
            return [
                await ex.run(StepRun(["/bin/sh", "-c", s], ENV, cwd, log, 20, sb)) for s in scripts
            ]
        finally:
            await ex.close()

    return asyncio.run(go())


def test_a_step_writes_only_its_own_dirs_and_reads_nothing_of_pushgates(tmp_path: Path) -> None:
    d = layout(tmp_path)
    log = tmp_path / "step.log"
    script = f"""
        cat {d["state"]}/pushgate.db {d["other"]}/theirs {d["conf"]}/pushgate.toml
        cat {tmp_path}/password
        echo EVIL > {d["state"]}/pushgate.db; echo EVIL > {d["other"]}/theirs
        touch {d["state"]}/evil {tmp_path}/evil {d["dep"]}/evil /usr/evil
        echo mine > {d["work"]}/w; echo mine > {d["arts"]}/a; echo mine > {d["tmp"]}/t
        echo mine > /tmp/private
        cat {d["dep"]}/built
    """
    [out] = steps(sandbox(d, tmp_path), d["work"], log, script)
    assert out.error is None, out.error
    text = log.read_text()
    for secret in ("DATABASE", "OTHER JOB", "CONFIG", "PASSWORD"):
        assert secret not in text, secret
    assert "BUILT" in text  # a buildjob's artifacts are readable
    assert (d["state"] / "pushgate.db").read_text() == "DATABASE"
    assert (d["other"] / "theirs").read_text() == "OTHER JOB"
    assert not list(tmp_path.rglob("evil")) and not os.path.exists("/usr/evil")
    for f in (d["work"] / "w", d["arts"] / "a", d["tmp"] / "t"):
        assert f.read_text() == "mine\n"
    assert not os.path.exists("/tmp/private")  # its /tmp is its own


def test_no_privilege_no_network_no_other_process(tmp_path: Path) -> None:
    d = layout(tmp_path)
    log = tmp_path / "step.log"
    script = f"""
        grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status
        echo "interfaces $(tail -n +3 /proc/net/dev | wc -l)"
        kill -0 {os.getpid()} && echo "SEES""RUNNER"
        mount -t tmpfs none {d["work"]} && echo "MOUN""TED"
        for f in /proc/1/fd/*; do readlink $f && echo "AGENT""FDS"; done
        cat /proc/1/environ && echo "AGENT""ENV"
        python3 -c 'import ctypes; l = ctypes.CDLL(None); print("PTRACE", l.ptrace(16, 1, 0, 0))'
        kill -9 1; kill -0 1 && echo "agent lives"
        echo "PIDS=$(ls /proc | grep -c '^[0-9]')"
    """
    [out] = steps(sandbox(d, tmp_path), d["work"], log, script)
    assert out.error is None, out.error
    text = log.read_text()
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert f"{cap}:\t0000000000000000" in text
    assert "interfaces 1" in text  # loopback only
    assert "SEESRUNNER" not in text and "MOUNTED" not in text
    # Its job's agent (pid 1, the end of the runner's socket) is out of its reach.
    assert "AGENTFDS" not in text and "AGENTENV" not in text, text
    assert "PTRACE -1" in text and "agent lives" in text, text
    pids = int(text.split("PIDS=")[-1].split()[0])
    assert pids <= 6  # cat (pid 1), the shell, ls, grep: nothing of the host's


def test_the_sandbox_lives_for_the_job_and_leftovers_die_with_their_step(tmp_path: Path) -> None:
    d = layout(tmp_path)
    log = tmp_path / "step.log"
    sb = sandbox(d, tmp_path)

    async def go() -> None:
        ex = LocalExecutor()
        try:
            # A step leaves a process behind; the next step of the job sees its files.
            first = StepRun(
                ["/bin/sh", "-c", f"sleep 61.37 >/dev/null 2>&1 & echo x > {d['tmp']}/kept"],
                ENV,
                d["work"],
                log,
                20,
                sb,
            )
            assert (await ex.run(first)).exit_code == 0
            assert not sleeping(), "the leftover is gone when its step ends"
            # (the background child may not have run sleep yet: then it is still named by
            # its parent shell's command line)
            assert re.search(
                r"killed 1 process\(es\) .*: \d+ \((sleep 61\.37|sh|/bin/sh -c sleep 61\.37.*)\)",
                log.read_text(),
            )
            second = StepRun(
                ["/bin/sh", "-c", f"cat {d['tmp']}/kept"],
                ENV,
                d["work"],
                log,
                20,
                sb,
            )
            assert (await ex.run(second)).exit_code == 0
            assert "x" in log.read_text().splitlines()[-2]  # the job's files live on
            await ex.release(sb)
        finally:
            await ex.close()

    def sleeping() -> bool:
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read() == b"sleep\x0061.37\x00":
                        return True
            except OSError:
                continue
        return False

    t0 = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - t0 < 10


def test_a_sandbox_that_cannot_be_made_breaks_the_step_with_the_reason(tmp_path: Path) -> None:
    d = layout(tmp_path)
    log = tmp_path / "step.log"
    sb = Sandbox(
        key="t",
        writable=(str(tmp_path / "missing"),),
        readonly=(),
        hidden=(),
        hidden_files=(),
    )
    [out] = steps(sb, d["work"], log, "true")
    assert out.exit_code is None and out.error is not None
    assert "cannot make the job's sandbox" in out.error and "missing" in out.error


LISTENER = """
import os, socket, sys, time
tcp = socket.socket(); tcp.bind(("127.0.0.1", 47613)); tcp.listen()
unix = socket.socket(socket.AF_UNIX); unix.bind("\\0pushgate-test-abstract"); unix.listen()
open("ready", "w").close()
while not os.path.exists("done"):
    time.sleep(0.02)
"""

PROBE = """
import os, socket
for name, fam, addr in [
    ("tcp", socket.AF_INET, ("127.0.0.1", 47613)),
    ("abstract", socket.AF_UNIX, "\\0pushgate-test-abstract"),
]:
    s = socket.socket(fam)
    try:
        s.connect(addr)
        print("REACHED", name)
    except OSError:
        print("refused", name)
for f in ("/tmp/mine", "/dev/shm/mine"):
    print("SEES" if os.path.exists(f) else "absent", f)
print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
"""


def other_job(d: dict[str, Path], sb: Sandbox) -> Sandbox:
    """Another job's sandbox beside sb's, in the same runner's sandbox: its own dir."""
    return Sandbox(
        key="k",
        writable=(str(d["other"]),),
        readonly=(),
        hidden=sb.hidden,
        hidden_files=sb.hidden_files,
    )


async def until_made(path: Path, step: asyncio.Task[StepOutcome], log: Path) -> None:
    """Wait (10 s at most) until a running step has made path."""
    for _ in range(500):
        if path.exists() or step.done():
            break
        await asyncio.sleep(0.02)
    assert path.exists(), log.read_text()


def test_jobs_of_one_runner_cannot_reach_each_other(tmp_path: Path) -> None:
    """Two jobs' sandboxes at once on one executor (one runner's sandbox): neither sees
    the other's /tmp, /dev/shm, processes, loopback or abstract sockets."""
    d = layout(tmp_path)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    sb_a = sandbox(d, tmp_path)
    sb_b = other_job(d, sb_a)
    listener = "echo A > /tmp/mine; echo A > /dev/shm/mine; exec python3 -c " + shlex.quote(
        LISTENER
    )

    async def go() -> None:
        ex = LocalExecutor()
        try:
            a = asyncio.create_task(
                ex.run(StepRun(["/bin/sh", "-c", listener], ENV, d["work"], log_a, 30, sb_a))
            )
            await until_made(d["work"] / "ready", a, log_a)
            probe = StepRun(["python3", "-c", PROBE], ENV, d["other"], log_b, 30, sb_b)
            assert (await ex.run(probe)).exit_code == 0, log_b.read_text()
            (d["work"] / "done").touch()
            assert (await a).exit_code == 0, log_a.read_text()
        finally:
            await ex.close()

    asyncio.run(go())
    text = log_b.read_text()
    assert "refused tcp" in text and "refused abstract" in text, text
    assert "absent /tmp/mine" in text and "absent /dev/shm/mine" in text, text
    pids = eval(text.split("pids ", 1)[1].splitlines()[0])
    assert len(pids) <= 2, text  # its agent (1) and itself: nothing of job a's


def test_a_job_after_another_on_the_same_agent_finds_nothing_of_it(tmp_path: Path) -> None:
    """Agents serve one job after another: the next job has the same agent (its pid
    namespace) but new mount and IPC namespaces, and finds nothing of the last one's: not
    its /tmp, /dev/shm or SysV IPC, nor a process it left behind (a `setsid` child of a
    step still running as the job ended, which no step's end killed)."""
    d = layout(tmp_path)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    sb_a = sandbox(d, tmp_path)
    sb_b = other_job(d, sb_a)
    sleep = f"sleep 63.{os.getpid() % 1000:03d}"
    ns = "echo pid $(readlink /proc/self/ns/pid)"
    leave = (
        f"{ns}; echo A > /tmp/mine; echo A > /dev/shm/mine; ipcmk -M 4096;"
        f" setsid {sleep} & touch {d['work']}/started; exec sleep 100"
    )
    probe = (
        f"{ns}; ls /tmp/mine /dev/shm/mine; echo shm $(ipcs -m | grep -c '^0x');"
        " echo procs $(ls /proc | grep -c '^[0-9]')"
    )

    async def go() -> None:
        ex = LocalExecutor()
        try:
            a = asyncio.create_task(
                ex.run(StepRun(["/bin/sh", "-c", leave], ENV, d["work"], log_a, 30, sb_a))
            )
            await until_made(d["work"] / "started", a, log_a)
            # The job ends while its step runs: the step's process group is killed, and
            # the setsid child, not in it, is left to the agent.
            await ex.release(sb_a)
            assert (await a).exit_code is None
            assert not alive_cmdline(sleep), "left behind after its job"
            run_b = StepRun(["/bin/sh", "-c", probe], ENV, d["other"], log_b, 30, sb_b)
            assert (await ex.run(run_b)).exit_code == 0, log_b.read_text()
            await ex.release(sb_b)
        finally:
            await ex.close()

    asyncio.run(go())
    a, b = log_a.read_text(), log_b.read_text()
    ns_a, ns_b = (re.search(r"pid (\S+)", t) for t in (a, b))
    assert ns_a and ns_b, (a, b)
    # (Only the pid namespace lives through both: a mount or IPC namespace's number is
    # free again, and may be the next one's, once it is gone.)
    assert ns_a[1] == ns_b[1], "the second job had an agent of its own: nothing tested"
    assert b.count("No such file") == 2 and "shm 0" in b, b
    procs = int(b.rsplit("procs ", 1)[1].split()[0])
    assert procs <= 5, b  # its agent, the shell and its subshell, ls, grep


def alive_cmdline(command: str) -> bool:
    want = command.replace(" ", "\0").encode() + b"\0"
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == want and procs_alive(int(pid)):
                    return True
        except (OSError, ValueError):
            continue
    return False


def test_the_host_places_the_agents_bind_from_are_gone(tmp_path: Path) -> None:
    """The runner's sandbox sees the host's hidden places under HOST, read-write, for its
    agents to bind a job's dirs from: a job's mount namespace has none of them."""
    d = layout(tmp_path)
    log = tmp_path / "step.log"
    script = (
        "echo places=$(ls -A /run/pushgate-host | wc -l);"
        " echo inside=$(find /run/pushgate-host -mindepth 2 | wc -l)"
    )
    [out] = steps(sandbox(d, tmp_path), d["work"], log, script)
    assert out.exit_code == 0, log.read_text()
    text = log.read_text()
    assert "places=0" not in text  # (the state dir, the config dir, /run, /tmp...)
    assert "inside=0" in text, text


def named(name: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == name:
                    out.append(int(pid))
        except OSError:
            continue
    return out


@pytest.mark.parametrize("victim", ["pushgate-zygote", "pushgate-agent", "pushgate-helper"])
def test_kill_9_of_the_sandbox_machinery_breaks_the_step_and_the_job_goes_on(
    tmp_path: Path, victim: str
) -> None:
    d = layout(tmp_path)
    log = tmp_path / "step.log"
    sb = sandbox(d, tmp_path)
    # Its own duration: the other parameters run beside it under xdist.
    sleep = f"sleep 59.{os.getpid() % 1000:03d}"

    async def go() -> tuple[StepOutcome, StepOutcome, int]:
        ex = LocalExecutor()
        try:
            slow = asyncio.create_task(
                ex.run(StepRun(["/bin/sh", "-c", sleep], ENV, d["work"], log, 30, sb))
            )
            await asyncio.sleep(1.0)
            helper = ex.spawner().proc
            assert helper is not None
            [pid] = [p for p in named(victim) if p == helper.pid or is_under(p, helper.pid)]
            os.kill(pid, signal.SIGKILL)
            first = await asyncio.wait_for(slow, 10)
            second = await ex.run(
                StepRun(["/bin/sh", "-c", "echo next"], ENV, d["work"], log, 10, sb)
            )
            return first, second, pid
        finally:
            await ex.close()

    first, second, pid = asyncio.run(go())
    assert first.exit_code is None and first.error and "died" in first.error, first
    assert second.exit_code == 0, log.read_text()
    assert " next" in log.read_text()
    # Nothing of the first step lives on.
    assert subprocess.run(["pgrep", "-f", sleep], capture_output=True).returncode == 1


def is_under(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            return False
        if pid == ancestor:
            return True
    return False


UNPRIVILEGED = """
import asyncio, json, sys
from pathlib import Path
from pushgate.run.executors.base import Sandbox, StepRun
from pushgate.run.executors.local import LocalExecutor

tmp = Path(sys.argv[1])
work, state = tmp / "state" / "work", tmp / "state"
sb = Sandbox("t", (str(work),), (), (str(state),), ())
script = (
    "id -u; grep CapEff /proc/self/status; cat ../secret || echo HIDDEN; echo mine > mine;"
    " ls /proc | grep -c '^[0-9]'; sleep 61.93 & echo left"
)

async def go():
    ex = LocalExecutor()
    try:
        out = await ex.run(StepRun(["/bin/sh", "-c", script], {"PATH": "/usr/bin:/bin"}, work,
                                   tmp / "step.log", 20, sb))
        return out.exit_code, out.error
    finally:
        await ex.close()

print(json.dumps(asyncio.run(go())))
"""


def test_an_unprivileged_runner_sandboxes_its_steps(tmp_path: Path) -> None:
    """pushgate run as a user without privileges (bwrap then makes a user namespace, and
    nests the sandbox's process in another): the same sandbox, the same leftovers killed.
    As root, the test runs it as nobody."""
    import json
    import sys

    (tmp_path / "state" / "work").mkdir(parents=True)
    (tmp_path / "state" / "secret").write_text("SECRET")
    prefix: list[str] = []
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    python = sys.executable
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is not installed")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        for p in [tmp_path, *tmp_path.rglob("*")]:
            os.chown(p, 65534, 65534)
        tmp_path.chmod(0o755)
        # An interpreter nobody can run and start its helper with (this one may live in
        # root's home), and that reads the executor's modules (the system's may do).
        for python in (
            sys.executable,
            f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
        ):
            probe = "import subprocess, sys, pushgate.run.executors.local;"
            probe += " subprocess.run([sys.executable, '-I', '-S', '-c', ''], check=True)"
            if (
                os.path.exists(python)
                and subprocess.run(
                    [*prefix, python, "-c", probe], capture_output=True, env=env
                ).returncode
                == 0
            ):
                break
        else:
            pytest.skip("nobody cannot run this interpreter, or read the project")
    run = subprocess.run(
        [*prefix, python, "-c", UNPRIVILEGED, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    code, error = json.loads(run.stdout.splitlines()[-1])
    log = (tmp_path / "step.log").read_text()
    if error and "bwrap" in error and "not permitted" in error.lower():
        pytest.skip(f"no unprivileged user namespaces here: {error}")
    assert error is None and code == 0, (error, log)
    assert "CapEff:\t0000000000000000" in log and "HIDDEN" in log and "SECRET" not in log
    assert (tmp_path / "state" / "work" / "mine").read_text() == "mine\n"
    # (the background child may not have run sleep yet: then it is named by its parent
    # shell's command line)
    assert re.search(r"killed 1 process\(es\) .*: \d+ \((sleep 61\.93|/bin/sh -c)", log), log
    assert subprocess.run(["pgrep", "-f", "sleep 61.93"], capture_output=True).returncode == 1
