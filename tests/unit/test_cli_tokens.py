"""Which of api.tokens the client commands use: the one named, else the first with the scope the
command needs (the CLI used the first token whatever its scopes, so a send-only token listed first,
as docs/api.md's least-privilege example has it, made status, override and drill fail with 403)."""

from __future__ import annotations

import pytest

from daemon.api_client import _token
from daemon.cli import main
from daemon.config import ConfigError, parse_config

CONFIG = """
store: {path: /tmp/x.db}
api:
  tokens:
    - {name: ci, token: ci-token, scopes: [send]}
    - {name: ops, token: ops-token}
provider: {name: p, smtp: {host: smtp.example.com}, mail_from: bc@example.com}
channels: {email: {type: email, to: [ops@example.com]}}
routes: [{match: {}, healthy: [email], outage: defer}]
"""


def test_the_first_token_with_the_scope_the_command_needs() -> None:
    config = parse_config(CONFIG)
    assert _token(config, None, "send", "f.yaml") == "ci-token"
    assert _token(config, None, "read", "f.yaml") == "ops-token"
    assert _token(config, None, "admin", "f.yaml") == "ops-token"


def test_a_token_named_or_a_clear_refusal() -> None:
    config = parse_config(CONFIG)
    assert _token(config, "ci", "admin", "f.yaml") == "ci-token"  # the server says what it lacks
    with pytest.raises(ConfigError, match="no token named 'nope' \\(tokens: ci, ops\\)"):
        _token(config, "nope", "read", "f.yaml")
    only_send = parse_config(CONFIG.replace("    - {name: ops, token: ops-token}\n", ""))
    with pytest.raises(ConfigError, match="no token has the 'admin' scope"):
        _token(only_send, None, "admin", "f.yaml")


def test_a_label_without_equals_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``send --label foo`` was sent without the label, unsaid: now argparse's usage error (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        main(["send", "--severity", "high", "--subject", "s", "--label", "foo"])
    assert exited.value.code == 2
    assert "'foo' is not KEY=VALUE" in capsys.readouterr().err
