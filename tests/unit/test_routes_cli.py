"""``routes test`` and ``routes show`` on the documented example policy in deploy/examples/."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.config_routes import build_policy
from daemon.routes_cli import add_arguments, routes_show, routes_test

EXAMPLE = Path(__file__).parents[2] / "deploy" / "examples" / "policy.yaml"
SECRETS = {
    "BACKCHANNEL_API_TOKEN": "t" * 24,
    "SMTP_PASSWORD": "smtp-password",
    "SLACK_BOT_TOKEN": "xoxb-1-2-abc",
    "TWILIO_AUTH_TOKEN": "a" * 32,
}


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", type=Path, default=EXAMPLE)
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_example_policy_loads_and_builds() -> None:
    """The documented example is a valid configuration whose tree builds."""
    config = load_config(EXAMPLE)
    tree = build_policy(config.routes, config.windows, config.directory)
    assert [r.name for r in tree] == ["databases", "audit", "working-hours", "everything-else"]


def test_routes_test_prints_route_plan_and_people(capsys: pytest.CaptureFixture[str]) -> None:
    """A critical db alert in an outage: the child route's escalation with its timings and people."""
    code = routes_test(
        args(
            "--severity=critical", "--label=team=db", "--state=outage", "--at=2024-03-29T10:00:00+01:00",
            "--recipient=db-oncall@example.com", "--recipient=stranger@elsewhere.org",
        )
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "at 2024-03-29T10:00:00+01:00, provider outage: route db-critical",
        "plan (outage): escalate until acknowledged",
        "  +0s slack (slack): alice, bob, carol -> #ops, U024ALICE, bob@example.com, U024CAROL; "
        "unknown recipients: stranger@elsewhere.org (fallback ops)",
        "  +5m sms (sms): alice, bob, carol -> +4915110000001, +4915110000002; "
        "unknown recipients: stranger@elsewhere.org (fallback ops); no sms address: carol",
        "  +15m slack-ops (slack): #ops-escalations",
    ]


def test_routes_test_reports_continue_and_windows(capsys: pytest.CaptureFixture[str]) -> None:
    """A security alert continues past audit; at night the muted high route falls through."""
    code = routes_test(args("--severity=high", "--label=security=cve", "--at=2024-03-29T23:30:00+01:00"))
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        "at 2024-03-29T23:30:00+01:00, provider outage: route audit",
        "  also matches (continue): everything-else",
        "plan (outage): slack",
        "  1. slack (slack): #ops",
    ]


FIXED = """\
store: {path: /tmp/x.db}
api: {tokens: [{name: t, token: t0123456789}]}
provider: {name: p, smtp: {host: smtp.example.com, username: ops@example.com, password: pw}}
channels:
  email: {type: email}
  sms-desk: {type: sms, account_sid: AC00000000000000000000000000000000, auth_token: x,
             from_number: "+15005550006", recipients: ["+14155552671"]}
  backup: {type: email, smtp: {host: relay.example.net}, to: [desk@example.net]}
directory:
  people:
    alice: {email: [alice@example.com], phone: "+4915110000001", backup_email: alice@backup.example.org}
routes:
  - {healthy: [email], outage: [sms-desk, backup]}
"""


def test_routes_test_shows_fixed_destinations_not_people(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Channels with recipients or to of their own are not readdressed: routes test names those."""
    path = tmp_path / "fixed.yaml"
    path.write_text(FIXED)
    assert routes_test(args("-c", str(path), "--recipient=alice@example.com")) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [
        "  1. sms-desk (sms): +14155552671",
        "  2. backup (email): alice@example.com",
    ]


def test_routes_test_under_unknown_uses_the_override(capsys: pytest.CaptureFixture[str]) -> None:
    """In state unknown the databases route's unknown action applies."""
    routes_test(
        args("--severity=warning", "--label=team=postgres", "--state=unknown", "--at=2024-03-29T12:00:00Z")
    )
    assert "route databases" in capsys.readouterr().out.splitlines()[0]


def test_routes_show_draws_the_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """Every route with its matchers, actions, windows and fallback, children indented."""
    assert routes_show(args()) == 0
    assert capsys.readouterr().out.splitlines() == [
        "databases [team=~db|postgres] healthy: email | outage: slack, sms | unknown: email, slack",
        "    fallback ops",
        "    └─ db-critical [severity in critical] healthy: email"
        " | outage: escalate +0s slack; +5m sms; +15m slack-ops | unknown: email, slack",
        "        fallback ops",
        "    └─ db-quiet [severity=~warning|info] healthy: email | outage: defer | unknown: email, slack",
        "        active in nights; fallback ops",
        "audit [security!= source!=ci] healthy: email | outage: slack continue",
        "working-hours [severity in critical,high] healthy: email | outage: slack",
        "    muted in nights except critical",
        "everything-else [everything] healthy: email | outage: defer",
    ]


def test_invalid_policy_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A route naming an unknown window is a configuration error: message on stderr, exit 78."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("active_in: [nights]", "active_in: [weekends]"))
    assert routes_show(args("-c", str(bad))) == 78
    assert "unknown window(s) weekends" in capsys.readouterr().err
