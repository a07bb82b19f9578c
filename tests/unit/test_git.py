"""pushgate.git against real repositories built in tmp_path."""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushgate.git import GitError, Mirror, check_ref, people_from_log, redact_url
from tests.gitrepo import Repo, make_bare, make_repo, remote_head, run_git

ANN = "Ann Author <ann@example.org>"
BOB = "Bob Builder <bob@example.org>"


class Upstream(Repo):
    c1: str
    c2: str
    s1: str
    m: str
    c4: str


@pytest.fixture()
def upstream(tmp_path: Path) -> Upstream:
    """main: c1 - c2 - M(c2, s1) - c4 ; side: s1 (branched at c1); tags v1 (light), v2 (annot)."""
    r = Upstream(make_repo(tmp_path / "work").path)
    r.c1 = r.commit("first", files={"README": "hello\n", "src/a.c": "int a;\n"})
    r.c2 = r.commit(
        "second\n\nLonger body.\n",
        files={"src/a.c": "int a = 2;\n"},
        author=ANN,
        trailers=[("Signed-off-by", ANN), ("Reviewed-by", "Rita Reviewer <rita@example.org>")],
    )
    r.branch("side", at=r.c1)
    r.s1 = r.commit(
        "side work",
        files={"side.txt": "s\n"},
        author=BOB,
        trailers=[("Signed-off-by", BOB), ("Acked-by", ANN)],
    )
    r.checkout("main")
    r.m = r.merge("side")
    r.c4 = r.commit("fourth", files={"README": "hello again\n"})
    r.tag("v1", r.c2)
    r.tag("v2", r.c4, message="release 2")
    return r


@pytest.fixture()
def remote(upstream: Upstream, tmp_path: Path) -> Path:
    return upstream.clone_bare(tmp_path / "xen.git")


@pytest.fixture()
def mirror(remote: Path, tmp_path: Path) -> Mirror:
    m = Mirror(tmp_path / "state" / "xen.git", str(remote), name="xen")
    m.ensure()
    return m


def git_log(repo: Path, *args: str) -> str:
    return run_git(repo, "-c", "log.mailmap=false", "log", "--no-color", *args)


# -- refs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "main",
        "refs/heads/staging",
        "xen-tested-master",
        "v4.17.0",
        "abc123",
        "0" * 40,
        "stable-4.17/next",
        "user@host",
    ],
)
def test_check_ref_accepts(ref: str) -> None:
    assert check_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "--upload-pack=x",
        "-x",
        "a..b",
        "x;rm",
        "x;rm -rf /",
        "",
        "a\nb",
        "a\x7fb",
        "a b",
        "foo.lock",
        "HEAD~1",
        "a^",
        "x:y",
        "@{-1}",
        "@",
        "a//b/",
        "$(id)",
        "`id`",
        "ref/",
        ".hidden",
    ],
)
def test_check_ref_rejects(ref: str) -> None:
    with pytest.raises(GitError):
        check_ref(ref)


def test_resolve_branches_tags_hashes(mirror: Mirror, upstream: Upstream) -> None:
    u = upstream
    assert mirror.resolve("main") == u.c4
    assert mirror.resolve("refs/heads/side") == u.s1
    assert mirror.resolve("v1") == u.c2
    assert mirror.resolve("v2") == u.c4  # annotated tag peeled to its commit
    assert mirror.resolve("refs/tags/v2") == u.c4
    assert mirror.resolve(u.c1[:10]) == u.c1
    assert mirror.resolve(u.c1.upper()) == u.c1
    with pytest.raises(GitError, match=r"tree xen: 'nosuch' does not resolve"):
        mirror.resolve("nosuch")
    with pytest.raises(GitError, match="bad ref"):
        mirror.resolve("--upload-pack=touch /tmp/pwned")


def test_resolve_prefers_branch_over_same_named_tag(upstream: Upstream, tmp_path: Path) -> None:
    upstream.tag("staging", upstream.c1)
    upstream.branch("staging", at=upstream.c2, switch=False)
    m = Mirror(tmp_path / "m.git", str(upstream.clone_bare(tmp_path / "u.git")))
    m.ensure()
    assert m.resolve("staging") == upstream.c2
    assert m.resolve("refs/tags/staging") == upstream.c1


# -- mirror and fetch ------------------------------------------------------------------------


def test_ensure_is_idempotent_and_fetch_updates_and_prunes(
    mirror: Mirror, upstream: Upstream, remote: Path
) -> None:
    mirror.ensure()  # no-op
    new = upstream.commit("fifth", files={"b": "b\n"})
    upstream.push(remote, "main:main")
    run_git(remote, "branch", "-D", "side")
    assert mirror.resolve("main") == upstream.c4
    mirror.fetch()
    assert mirror.resolve("main") == new
    with pytest.raises(GitError):
        mirror.resolve("side")


def test_unreachable_url(tmp_path: Path) -> None:
    m = Mirror(tmp_path / "xen.git", str(tmp_path / "nonexistent"), name="xen")
    with pytest.raises(GitError) as ei:
        m.ensure()
    msg = str(ei.value)
    assert msg.startswith(f"cannot fetch tree xen from {tmp_path / 'nonexistent'}: fatal: ")
    assert "\n" not in msg
    assert not m.path.exists() and list(tmp_path.iterdir()) == [tmp_path / "xen.git.lock"]


def test_fetch_after_upstream_vanished(mirror: Mirror, remote: Path) -> None:
    remote.rename(remote.with_name("gone.git"))
    with pytest.raises(GitError, match=r"^cannot fetch tree xen from .*xen\.git: fatal: "):
        mirror.fetch()


@pytest.fixture()
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never answers: a network hang, for real."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def test_network_timeout(tmp_path: Path, silent_server: int) -> None:
    m = Mirror(
        tmp_path / "x.git", f"git://127.0.0.1:{silent_server}/x.git", name="x", network_timeout=1.0
    )
    with pytest.raises(GitError, match=r"tree x .*timed out after 1s"):
        m.ensure()


def test_bad_url_rejected(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="bad url"):
        Mirror(tmp_path / "x.git", "--upload-pack=touch /tmp/x")


def test_redact_url() -> None:
    assert (
        redact_url("To https://bot:s3cret@git.example.org/x.git")
        == "To https://bot:***@git.example.org/x.git"
    )
    assert redact_url("ssh://git@host/x.git") == "ssh://git@host/x.git"


# -- worktrees -------------------------------------------------------------------------------


def test_worktree_content(mirror: Mirror, upstream: Upstream, tmp_path: Path) -> None:
    dest = tmp_path / "build" / "xen"
    mirror.worktree("v1", dest)
    assert (dest / "README").read_text() == "hello\n"
    assert (dest / "src/a.c").read_text() == "int a = 2;\n"
    assert not (dest / "side.txt").exists()
    assert run_git(dest, "rev-parse", "HEAD").strip() == upstream.c2
    assert run_git(dest, "status", "--porcelain") == ""
    # A second, independent worktree of another revision at the same time.
    dest2 = tmp_path / "build" / "xen2"
    mirror.worktree(upstream.c4, dest2)
    assert (dest2 / "side.txt").read_text() == "s\n"
    mirror.remove_worktree(dest)
    mirror.remove_worktree(dest)  # idempotent
    assert not dest.exists() and dest2.exists()
    listed = [line.split()[0] for line in run_git(mirror.path, "worktree", "list").splitlines()]
    assert str(dest) not in listed and str(dest2) in listed


def test_worktree_is_detached(mirror: Mirror, tmp_path: Path) -> None:
    dest = tmp_path / "wt"
    mirror.worktree("main", dest)
    proc_out = run_git(dest, "rev-parse", "--abbrev-ref", "HEAD").strip()
    assert proc_out == "HEAD"  # detached: no branch is held by the worktree
    mirror.fetch()  # fetching into refs/heads/main is not blocked by the worktree


def test_worktree_dest_reused_after_plain_delete(
    mirror: Mirror, upstream: Upstream, tmp_path: Path
) -> None:
    dest = tmp_path / "wt"
    mirror.worktree("main", dest)
    shutil.rmtree(dest)  # a build dir wiped without remove_worktree
    mirror.worktree("v1", dest)
    assert run_git(dest, "rev-parse", "HEAD").strip() == upstream.c2
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "junk").write_text("x")
    with pytest.raises(GitError, match="is not empty"):
        mirror.worktree("main", tmp_path / "full")
    with pytest.raises(GitError, match="does not resolve"):
        mirror.worktree("nosuch", tmp_path / "wt2")


# -- logs ------------------------------------------------------------------------------------


def test_log_range_matches_git_log_order(mirror: Mirror, upstream: Upstream) -> None:
    u = upstream
    commits = mirror.log_range(u.c1, "main")
    expected = git_log(u.path, "--format=%H", f"{u.c1}..main").split()
    assert [c.sha for c in commits] == expected
    assert set(expected) == {u.c2, u.s1, u.m, u.c4}
    by = {c.sha: c for c in commits}
    c2 = by[u.c2]
    assert (c2.author_name, c2.author_email) == ("Ann Author", "ann@example.org")
    assert c2.author == ANN and c2.committer_email == "committer@example.com"
    assert c2.subject == "second" and c2.body.startswith("Longer body.")
    assert c2.trailers == (
        ("Signed-off-by", ANN),
        ("Reviewed-by", "Rita Reviewer <rita@example.org>"),
    )
    assert c2.parents == (u.c1,)
    assert by[u.m].parents == (u.c2, u.s1)
    assert c2.author_date.isoformat() == "2024-01-01T12:02:00+00:00"
    assert mirror.count_range(u.c1, "main") == 4
    assert mirror.count_range(None, "main") == 5
    assert len(mirror.log_range(None, "v1")) == 2
    assert mirror.log_range("main", "main") == []


def test_revision_log_text_is_plain_git_log(mirror: Mirror, upstream: Upstream) -> None:
    u = upstream
    text = mirror.revision_log_text(u.c1, u.c4)
    assert text == git_log(u.path, f"{u.c1}..{u.c4}")
    assert f"commit {u.m}\nMerge: {u.c2[:7]} {u.s1[:7]}\n" in text
    assert "    Signed-off-by: Ann Author <ann@example.org>" in text


def test_revision_log_truncation(mirror: Mirror, upstream: Upstream) -> None:
    u = upstream
    n = len(git_log(u.path, f"{u.c1}..{u.c4}").splitlines())
    assert mirror.revision_log_text(u.c1, u.c4, max_lines=n + 1).count("\ncommit ") == 3
    assert (
        mirror.revision_log_text(u.c1, u.c4, max_lines=n)
        == f"(No revision log; it would be {n} lines long.)\n"
    )


def test_people_touched(upstream: Upstream, tmp_path: Path) -> None:
    u = upstream
    base = u.c4
    u.commit(
        "x",
        author="Roger Pau Monne <roger.pau@citrix.com>",
        trailers=[
            ("Signed-off-by", "Roger Pau Monné <roger.pau@citrix.com>"),
            ("Reviewed-by", "Only Reviewer <rev@example.org>"),
            ("Release-Acked-by", "Release Manager <rm@example.org>"),
            ("CC", "Cc Person <cc@example.org>"),
            ("Tested-by", "Luo Yuzhang <yuzhang.luo@intel.com> # QAT"),
        ],
    )
    u.commit(
        "y",
        author="ann author <ANN@example.org>",
        trailers=[
            ("acked-by", "zed <zed@example.org>"),
            ("Committed-by", "Bob Builder <bob@example.org>"),
        ],
    )
    u.commit(
        "z\n\n     Signed-off-by: Five Spaces <five@example.org>\nFrom: Not Indented <n@x>",
        author=ANN,
    )
    m = Mirror(tmp_path / "m.git", str(u.path))
    m.ensure()
    # Log order is newest first: z's "Ann Author" is seen before y's spelling, which wins.
    # z's message line "From: ..." is indented four spaces by git log, so it counts; its
    # "     Signed-off-by" line ends up indented nine spaces and does not.
    assert m.people_touched(base, "main") == [
        "ann author <ANN@example.org>",
        "Bob Builder <bob@example.org>",
        "Luo Yuzhang <yuzhang.luo@intel.com> # QAT",
        "Not Indented <n@x>",
        "Roger Pau Monne <roger.pau@citrix.com>",
        "Roger Pau Monné <roger.pau@citrix.com>",
        "zed <zed@example.org>",
    ]


def test_people_from_log_rules() -> None:
    log = (
        "commit 1\nAuthor: B <b@x>\n\n    subj\n\n    From: C <c@x>\n"
        "     Signed-off-by: five <f@x>\n  Acked-by: two <t@x>\n    Signed-off-by:nospace <n@x>\n"
        "    SIGNED-OFF-BY: \tUpper <u@x>\n    Suggested-by: S <s@x>\n    Fixes: abc\n"
        "commit 2\nauthor: b <B@X>\n"
    )
    assert people_from_log(log) == ["b <B@X>", "C <c@x>", "Upper <u@x>"]


def test_parents_graph(mirror: Mirror, upstream: Upstream) -> None:
    u = upstream
    g = mirror.parents_graph(u.c1, u.c4)
    assert not g.rewound
    assert g.parents == {u.c4: [u.m], u.m: [u.c2, u.s1], u.c2: [u.c1], u.s1: [u.c1], u.c1: []}
    assert list(g.parents)[0] == u.c4
    assert set(g.dates) == set(g.parents)
    assert g.dates[u.c4] > g.dates[u.c1]
    # From c2, the side commit is not a descendant of the base: the merge keeps one parent.
    g2 = mirror.parents_graph(u.c2, u.c4)
    assert g2.parents == {u.c4: [u.m], u.m: [u.c2], u.c2: []}
    rew = mirror.parents_graph(u.s1, u.c2)
    assert rew.rewound and rew.parents == {u.c2: [u.s1], u.s1: []}


def test_is_ancestor(mirror: Mirror, upstream: Upstream) -> None:
    u = upstream
    assert mirror.is_ancestor(u.c1, "main")
    assert mirror.is_ancestor("main", "main")
    assert not mirror.is_ancestor("main", u.c2)
    assert not mirror.is_ancestor("side", "v1")


# -- pushing ---------------------------------------------------------------------------------


def test_push_fast_forward(mirror: Mirror, upstream: Upstream, remote: Path) -> None:
    u = upstream
    run_git(remote, "branch", "tested", u.c2)
    mirror.fetch()
    assert mirror.remote_ref(str(remote), "tested") == u.c2
    res = mirror.push_with_lease(str(remote), "tested", "main", u.c2)
    assert res.ok and res.reason == "pushed", res.output
    assert f"To {remote}\n" in res.output
    assert re.search(
        rf"^   {u.c2[:7]}[0-9a-f]*\.\.{u.c4[:7]}[0-9a-f]*  {u.c4} -> tested$", res.output, re.M
    ), res.output
    assert remote_head(remote, "refs/heads/tested") == u.c4
    assert mirror.remote_ref(str(remote), "refs/heads/tested") == u.c4
    assert mirror.remote_ref(str(remote), "nosuch") is None


def test_push_refused_when_remote_moved(mirror: Mirror, upstream: Upstream, remote: Path) -> None:
    u = upstream
    run_git(remote, "branch", "tested", u.c1)
    mirror.fetch()
    # Someone else moves the tested ref (to c2) after our decision, which expected c1.
    run_git(remote, "update-ref", "refs/heads/tested", u.c2)
    res = mirror.push_with_lease(str(remote), "tested", u.c4, u.c1)
    assert not res.ok and res.reason == "stale", res.output
    assert "[rejected]" in res.output and "stale info" in res.output
    assert remote_head(remote, "refs/heads/tested") == u.c2


def test_push_refused_when_not_fast_forward(
    mirror: Mirror, upstream: Upstream, remote: Path
) -> None:
    u = upstream
    run_git(remote, "branch", "tested", u.c2)
    res = mirror.push_with_lease(str(remote), "tested", "side", u.c2)
    assert not res.ok and res.reason == "not-fast-forward"
    assert remote_head(remote, "refs/heads/tested") == u.c2
    # Rewinding is refused too, even though the lease would match.
    res = mirror.push_with_lease(str(remote), "tested", u.c1, u.c2)
    assert not res.ok and res.reason == "not-fast-forward"
    assert remote_head(remote, "refs/heads/tested") == u.c2


def test_push_to_separate_repository(mirror: Mirror, upstream: Upstream, tmp_path: Path) -> None:
    u = upstream
    tested = make_bare(tmp_path / "tested.git")
    # First push creates the ref: expected_old None means "must not exist yet".
    res = mirror.push_with_lease(str(tested), "xen-tested-master", "v1", None)
    assert res.ok, res.output
    assert remote_head(tested, "refs/heads/xen-tested-master") == u.c2
    again = mirror.push_with_lease(str(tested), "xen-tested-master", "main", None)
    assert not again.ok and again.reason == "stale"
    assert remote_head(tested, "refs/heads/xen-tested-master") == u.c2
    res = mirror.push_with_lease(str(tested), "xen-tested-master", "main", u.c2)
    assert res.ok and remote_head(tested, "refs/heads/xen-tested-master") == u.c4
    assert remote_head(tested, "refs/heads/main") is None  # only the tested ref is pushed


def test_push_old_revision_only_in_target_repository(
    mirror: Mirror, upstream: Upstream, tmp_path: Path
) -> None:
    """The tested repo holds a commit the mirror never saw: it is fetched for the check."""
    other = make_repo(tmp_path / "other")
    alien = other.commit("unrelated", files={"z": "z\n"})
    tested = other.clone_bare(tmp_path / "tested.git")
    run_git(tested, "update-ref", "refs/heads/tested", alien)
    assert not mirror.has_commit(alien)
    res = mirror.push_with_lease(str(tested), "tested", "main", alien)
    assert not res.ok and res.reason == "not-fast-forward"
    assert mirror.has_commit(alien)
    assert remote_head(tested, "refs/heads/tested") == alien
    unknown = "1" * 40
    res = mirror.push_with_lease(str(tested), "tested", "main", unknown)
    assert not res.ok and res.reason == "stale"
    assert remote_head(tested, "refs/heads/tested") == alien


def test_push_up_to_date_and_errors(
    mirror: Mirror, upstream: Upstream, tmp_path: Path, remote: Path
) -> None:
    u = upstream
    res = mirror.push_with_lease(str(remote), "main", "main", u.c4)
    assert res.ok and res.reason == "up-to-date"
    with pytest.raises(GitError, match=r"cannot push refs/heads/tested to .*nowhere"):
        mirror.push_with_lease(str(tmp_path / "nowhere"), "tested", "main", None)
    with pytest.raises(GitError, match=r"cannot push refs/heads/tested to .*nowhere"):
        mirror.push_with_lease(str(tmp_path / "nowhere"), "tested", "main", "2" * 40)
    gone = mirror.push_with_lease(str(remote), "no-such-branch", "main", "2" * 40)
    assert not gone.ok and gone.reason == "stale"
    with pytest.raises(GitError, match="bad ref"):
        mirror.push_with_lease(str(remote), "a..b", "main", None)
    with pytest.raises(GitError, match="bad repository url"):
        mirror.push_with_lease("--receive-pack=touch x", "tested", "main", None)
    with pytest.raises(GitError, match="cannot list"):
        mirror.remote_ref(str(tmp_path / "nowhere"), "tested")


# -- hygiene ---------------------------------------------------------------------------------


def test_caller_git_env_and_user_config_are_ignored(
    mirror: Mirror, upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = mirror.revision_log_text(upstream.c1, "main")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[format]\n\tpretty = oneline\n[log]\n\tdate = iso\n[core]\n\tpager = false\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    assert mirror.revision_log_text(upstream.c1, "main") == expected
    assert mirror.resolve("main") == upstream.c4


def test_untrusted_commit_text_is_data(
    mirror: Mirror, upstream: Upstream, remote: Path, tmp_path: Path
) -> None:
    nasty = "--upload-pack=touch pwned\n\n$(touch pwned) `touch pwned`; rm -rf /\n\nFrom: x"
    sha = upstream.commit(nasty, author="Eve -- <--exec=x@example.org>")
    upstream.push(remote, "main:main")
    mirror.fetch()
    [c] = mirror.log_range(upstream.c4, "main")
    assert c.sha == sha and c.subject == "--upload-pack=touch pwned"
    assert c.author_name == "Eve --" and c.author_email == "--exec=x@example.org"
    assert "$(touch pwned)" in c.body
    # The "From: x" message line is indented four spaces in the log: osstest counts it too.
    assert mirror.people_touched(upstream.c4, "main") == ["Eve -- <--exec=x@example.org>", "x"]
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()
