"""What an ops engineer meets on day one, following README.md and docs/ literally: ``check`` says
OK only for a file ``run`` starts with. Found by a review of the operator's journey; each test
failed on the code before."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {"TOKEN": "tok-SECRET-123"}

BASE = """\
store: {{path: {store}}}
api: {{listen: "127.0.0.1:0", tokens: [{{name: t, token: "${{TOKEN}}"}}]}}
provider:
  name: p
  smtp: {smtp}
{provider_extra}channels:
  email: {{type: email, to: [ops@example.com]}}
routes:
  - {{match: {{}}, healthy: [email], outage: defer}}
"""


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on, as a second daemon or another service would."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def cli(command: str, config: Path, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", command, "-c", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.parametrize(
    "smtp",
    [
        "{host: 127.0.0.1, port: 1, starttls: false}",
        '{host: smtp.sendgrid.net, username: apikey, password: "${TOKEN}"}',
    ],
)
def test_check_and_run_refuse_an_email_channel_without_a_sender(tmp_path: Path, smtp: str) -> None:
    """An email channel with no mail_from anywhere is exit 78 naming the channel, not a traceback at run."""
    cfg = tmp_path / "bc.yaml"
    cfg.write_text(BASE.format(store=tmp_path / "bc.db", smtp=smtp, provider_extra=""))
    for command in ("check", "run"):
        result = cli(command, cfg)
        assert result.returncode == 78, result.stderr[-500:]
        assert f"{cfg}:7: channels.email.mail_from: no sender" in result.stderr
        assert "Traceback" not in result.stderr


def test_check_and_run_refuse_a_roundtrip_canary_without_a_sender(tmp_path: Path) -> None:
    """A round-trip check with no mail_from and no provider.mail_from is exit 78 naming the check."""
    cfg = tmp_path / "bc.yaml"
    checks = (
        "  checks:\n    - {type: smtp}\n"
        "    - {type: roundtrip, to: canary@example.com, role: confirm,\n"
        '       imap: {host: 127.0.0.1, port: 1, username: canary@example.com, password: "${TOKEN}"}}\n'
    )
    text = BASE.format(store=tmp_path / "bc.db", smtp="{host: 127.0.0.1, port: 1}", provider_extra=checks)
    cfg.write_text(text.replace("type: email,", "type: email, mail_from: bc@example.com,"))
    for command in ("check", "run"):
        result = cli(command, cfg)
        assert result.returncode == 78, result.stderr[-500:]
        assert f"{cfg}:8: provider.checks[1].mail_from: the canary needs a sender" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["api", "smtp intake"])
def test_run_on_a_port_in_use_says_which_address_without_a_traceback(
    tmp_path: Path, taken_port: int, where: str
) -> None:
    """A listener whose port is taken ends run with one line naming the address, not a traceback."""
    text = BASE.format(
        store=tmp_path / "bc.db",
        smtp="{host: 127.0.0.1, port: 1}",
        provider_extra="  mail_from: bc@example.com\n",
    )
    if where == "api":
        text = text.replace('"127.0.0.1:0"', f'"127.0.0.1:{taken_port}"')
    else:
        text += f'intake: {{smtp: {{listen: "127.0.0.1:{taken_port}", allowed_networks: [127.0.0.0/8]}}}}\n'
    cfg = tmp_path / "bc.yaml"
    cfg.write_text(text)
    result = cli("run", cfg)
    assert result.returncode == 1, result.stderr[-500:]
    assert f"cannot listen on 127.0.0.1:{taken_port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("channel", "problem"),
    [
        ("", "5: provider.smtp.password: empty"),
        ('  sl: {type: slack, token: "${EMPTY}", targets: ["#ops"]}\n', "8: channels.sl.token: empty"),
        (
            "  sms: {type: sms, account_sid: AC0123456789abcdef0123456789abcdef, "
            'auth_token: "${EMPTY}", from_number: "+15005550006"}\n',
            "8: channels.sms.auth_token: empty",
        ),
    ],
)
def test_check_refuses_a_secret_that_resolves_to_nothing(tmp_path: Path, channel: str, problem: str) -> None:
    """A secret reference to an empty variable or file is exit 78, not an OK that fails in the outage."""
    (tmp_path / "empty").write_text("")
    smtp = "{host: 127.0.0.1, port: 1, username: ops@example.com, password: " + (
        '"${EMPTY}"}' if not channel else '"${TOKEN}"}'
    )
    text = BASE.format(store=tmp_path / "bc.db", smtp=smtp, provider_extra="")
    cfg = tmp_path / "bc.yaml"
    cfg.write_text(text.replace("routes:\n", channel + "routes:\n"))
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "check", "-c", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV, "EMPTY_FILE": str(tmp_path / "empty")},
        timeout=30,
        check=False,
    )
    assert result.returncode == 78, result.stdout
    assert f"{cfg}:{problem}: does its variable or file hold the secret?" in result.stderr


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://10.0.3.7:8080/hook", "10.0.3.7 is a private address"),
        ("http://localhost:8080/hook", "localhost is a loopback address"),
        ("http://[fd00::7]/hook", "fd00::7 is a private address"),
    ],
)
def test_check_refuses_a_webhook_the_ssrf_guard_would_refuse_every_send(
    tmp_path: Path, url: str, refused: str
) -> None:
    """A webhook at a literal private address without allow_private is exit 78, not OK then failed sends."""
    hook = f'  hook: {{type: webhook, url: "{url}", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}\n'
    text = BASE.format(
        store=tmp_path / "bc.db",
        smtp="{host: 127.0.0.1, port: 1}",
        provider_extra="  mail_from: bc@example.com\n",
    )
    cfg = tmp_path / "bc.yaml"
    cfg.write_text(text.replace("routes:\n", hook + "routes:\n"))
    result = cli("check", cfg)
    assert result.returncode == 78, result.stdout
    assert f"{cfg}:9: channels.hook.url: {refused}, which the SSRF guard refuses" in result.stderr
    cfg.write_text(text.replace("routes:\n", hook.replace("}\n", ", allow_private: true}\n") + "routes:\n"))
    assert cli("check", cfg).returncode == 0
