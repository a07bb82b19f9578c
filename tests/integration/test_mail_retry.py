"""No mail is lost (issue 12, item 2): a report whose SMTP login failed stays `failed` with
its error, `mail list` shows it, and `mail retry` sends it once the password is fixed."""

from __future__ import annotations

from pathlib import Path

from pushgate.publish.mail.message import parse
from tests.gateproject import make_gate_project
from tests.smtpserver import SmtpServer


def test_smtp_auth_failure_then_fixed_mail_retry_sends_it_once(tmp_path: Path) -> None:
    pw = tmp_path / "smtp-password"
    pw.write_text("wrong-Pa55\n")
    with SmtpServer(users={"pushgate": "right-Pa55"}) as srv:
        p = make_gate_project(
            tmp_path / "p",
            mail=(
                f'mode = "smtp"\nhost = "127.0.0.1"\nport = {srv.port}\n'
                f'user = "pushgate"\npassword_file = "{pw}"'
            ),
        )
        p.commit("one")
        out = p.cli("branch", "run", "-q", "app")
        assert "push: pushed" in out.stdout, out.stdout + out.stderr
        assert srv.received == []
        listed = p.cli("mail", "list")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:5] == ["1", "failed", "report", "flight", "1"], lines
        assert lines[0].endswith("[app test] 1: all pass - PUSHED")
        assert lines[1].strip().startswith("last error: SMTP authentication as 'pushgate'")
        assert "wrong-Pa55" not in listed.stdout
        # Still wrong: tried, failed again, kept.
        again = p.cli("mail", "retry", "--failed")
        assert again.returncode == 1 and "retried 1: sent 0" in again.stdout, again.stdout
        assert srv.received == []
        pw.write_text("right-Pa55\n")
        fixed = p.cli("mail", "retry", "1")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert "retried 1: sent 1" in fixed.stdout
        assert [parse(r.data)["Subject"] for r in srv.received] == [
            "[app test] 1: all pass - PUSHED"
        ]
        assert sorted(srv.received[0].rcpt_tos) == [
            "cc@example.org",
            "hidden@example.org",
            "list@example.org",
        ]
        # Sent once: nothing more to retry, a sent mail is not sent again.
        assert p.cli("mail", "retry", "--failed").stdout.strip() == "no failed mail to retry"
        refused = p.cli("mail", "retry", "1")
        assert refused.returncode == 2 and "mail 1 was sent" in refused.stderr
        assert p.cli("mail", "flush").returncode == 0
        assert len(srv.received) == 1
        assert p.cli("mail", "list", "--status", "sent").stdout.split()[:2] == ["1", "sent"]
        assert p.cli("mail", "list", "--status", "failed").stdout == ""
        bad = p.cli("mail", "retry")
        assert bad.returncode == 2 and "IDs or --failed" in bad.stderr
        assert p.cli("mail", "retry", "7").returncode == 2
