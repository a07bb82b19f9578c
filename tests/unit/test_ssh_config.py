"""ssh hosts in the config (address, user, key, known_hosts checked by `check`), and the
artifact globs the ssh executor matches against a remote listing."""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import pytest

from pushgate import config as cfgmod
from pushgate.config import ConfigError
from pushgate.run.executors.ssh import match_globs

BASE = """
[trees.t]
url = "/srv/t.git"

[jobs.j]
steps = [ { testid = "s", command = "true" } ]
"""


def keys(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().split()[1]


def host(tmp_path: Path, body: str) -> cfgmod.Loaded:
    p = tmp_path / "pushgate.toml"
    p.write_text(BASE + "\n[hosts.h]\n" + body)
    return cfgmod.load(p)


def test_ssh_host_needs_its_keys_and_a_known_host_key(tmp_path: Path) -> None:
    key, blob = keys(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(f"[10.0.0.9]:2222 ssh-ed25519 {blob}\n")
    ssh = 'executor = "ssh"\naddress = "10.0.0.9"\nport = 2222\nuser = "pg"\n'
    files = f'key_file = "{key}"\nknown_hosts = "{known}"\n'
    loaded = host(tmp_path, ssh + files)
    assert loaded.cfg.hosts["h"].slots == 1  # an ssh host is one job at a time by default
    with pytest.raises(ConfigError, match=r"hosts\.h\.known_hosts: required for an ssh host"):
        host(tmp_path, ssh + f'key_file = "{key}"\n')
    with pytest.raises(ConfigError, match=r"hosts\.h\.key_file: cannot read"):
        host(tmp_path, ssh + files.replace(str(key), str(tmp_path / "nope")))
    # A known_hosts without this host's key (here: another port) is refused up front.
    with pytest.raises(ConfigError, match=r"no key for 10\.0\.0\.9 port 2200"):
        host(tmp_path, ssh.replace("2222", "2200") + files)
    with pytest.raises(ConfigError, match=r"hosts\.h\.address: only for an ssh host"):
        host(tmp_path, 'address = "10.0.0.9"\n')
    with pytest.raises(ConfigError, match=r"hosts\.h\.user: invalid user"):
        host(tmp_path, ssh.replace('"pg"', '"-oProxyCommand=x"') + files)
    with pytest.raises(ConfigError, match=r"hosts\.h\.bogus: unknown key"):
        host(tmp_path, ssh + files + "bogus = 1\n")
    with pytest.raises(ConfigError, match=r"runner\.health_check_job: job 'nope'"):
        p = tmp_path / "pushgate.toml"
        p.write_text(BASE + '\n[runner]\nhealth_check_job = "nope"\n')
        cfgmod.load(p)


def test_artifact_globs_match_as_glob_does(tmp_path: Path) -> None:
    tree = ["a/b/c.txt", "a/.h", "dist/x.tar.gz", "dist/sub/y", ".hid", "z.txt", "e/"]
    for p in tree:
        full = tmp_path / p
        if p.endswith("/"):
            full.mkdir(parents=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.touch()
    listing = [os.path.relpath(p, tmp_path) for p in glob.glob(f"{tmp_path}/**", recursive=True)]
    listing += [
        os.path.relpath(p, tmp_path) for p in glob.glob(f"{tmp_path}/**/.*", recursive=True)
    ]
    listing = sorted(set(listing) - {"."})
    for pat in ["dist/*", "**/*.txt", "a/**", "*", "dist", "a/*/c.txt", "*.txt", "a/.*", ".*", "e"]:
        want = sorted(
            os.path.relpath(x, tmp_path) for x in glob.glob(f"{tmp_path}/{pat}", recursive=True)
        )
        assert sorted(match_globs(listing, [pat])) == want, pat
