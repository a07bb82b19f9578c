"""Real OpenSSH servers on loopback for the ssh executor's tests.

Each host is an `sshd -D` of its own on a free 127.0.0.1 port, with its own host key and
(when the tests run as root, as CI does) its own user; the client key is made by the test
and authorized for every user. Hosts can be killed (the listener and every session with
its processes, as a machine that loses power) and restarted, or given a new host key.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    if path.exists():
        path.unlink()
        path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
    )
    return path.with_suffix(".pub").read_text().strip()


def _user(name: str) -> pwd.struct_passwd:
    """A login user of the host (made when missing; '*': no password, not locked)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
        subprocess.run(["usermod", "-p", "*", name], check=True)
        return pwd.getpwnam(name)


def descendants(pid: int) -> list[int]:
    """pid's children, grandchildren and so on (by /proc's parent links)."""
    kids: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class SshHost:
    name: str
    dir: Path
    user: str
    home: Path
    port: int
    client_key: Path
    known_hosts: Path
    proc: subprocess.Popen[bytes] | None = None
    pubkey: str = ""
    extra: list[str] = field(default_factory=list)

    @property
    def host_key(self) -> Path:
        return self.dir / "host_key"

    def config(self) -> Path:
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "AuthorizedKeysFile .ssh/authorized_keys",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    f"AllowUsers {self.user}",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    "LogLevel ERROR",
                    *self.extra,
                    "",
                ]
            )
        )
        return cfg

    def start(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "sshd.log", "ab"),  # noqa: SIM115 - the server's own
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def kill(self) -> None:
        """The machine dies: the listener and every session, with the steps, at once."""
        if self.proc is None:
            return
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def rekey(self) -> None:
        """A new host key (a reinstalled machine, or another one at its address)."""
        self.kill()
        _keygen(self.host_key)
        self.start()

    def user_processes(self) -> list[str]:
        """Command lines of the host user's processes."""
        uid = pwd.getpwnam(self.user).pw_uid
        out = []
        for e in os.listdir("/proc"):
            if not e.isdigit():
                continue
            try:
                if os.stat(f"/proc/{e}").st_uid != uid:
                    continue
                with open(f"/proc/{e}/cmdline", "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                continue
        return out


def make_hosts(base: Path, n: int) -> list[SshHost]:
    """n sshd hosts, started; the client key is base/client_key, each host's known_hosts
    file holds its key only."""
    client_key = base / "client_key"
    pub = _keygen(client_key)
    root = os.geteuid() == 0
    hosts = []
    for i in range(n):
        d = base / f"host{i}"
        d.mkdir()
        # A user per host and per xdist worker: a test that kills a host's user's processes
        # or removes its job dirs must not touch another worker's.
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        name = f"pgssh{i}" + (f"-{worker}" if worker else "")
        pw = _user(name) if root else pwd.getpwuid(os.getuid())
        home = Path(pw.pw_dir)
        ssh = home / ".ssh"
        ssh.mkdir(exist_ok=True)
        keys = ssh / "authorized_keys"
        lines = keys.read_text().splitlines() if keys.exists() else []
        if pub not in lines:
            keys.write_text("\n".join([*lines, pub, ""]))
        if root:
            for p in (ssh, keys):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        h = SshHost(f"host{i}", d, pw.pw_name, home, free_port(), client_key, d / "known_hosts")
        h.pubkey = _keygen(h.host_key)
        h.known_hosts.write_text(f"[127.0.0.1]:{h.port} {h.pubkey}\n")
        h.start()
        hosts.append(h)
    return hosts
