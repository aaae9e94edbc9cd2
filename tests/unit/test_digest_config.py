"""The digest block of paced channels: defaults, validation, the documented example, the policy built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from daemon.build import channel_policies
from daemon.config import Config, ConfigError, parse_config
from daemon.core.digest import SMS_LAYOUT

DOCS = Path(__file__).resolve().parents[2] / "docs"
BASE = """\
store: {path: /tmp/x.db}
api: {tokens: [{name: t, token: t0123456789}]}
provider: {name: p, smtp: {host: smtp.example.com, username: ops@example.com, password: pw}}
"""
SLACK = 'slack: {type: slack, token: "xoxb-test-token", targets: ["#ops"]%s}'
SMS = (
    'sms: {type: sms, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: "t",'
    ' from_number: "+14155550100", recipients: ["+14155552671"]%s}'
)


def config(*channels: str) -> Config:
    listed = "".join(f"  {c}\n" for c in channels)
    names = [c.split(":", 1)[0] for c in channels]
    return parse_config(
        f"{BASE}channels:\n{listed}routes: [{{match: {{}}, healthy: {names}, outage: {names}}}]\n"
    )


def test_paced_channels_digest_by_default() -> None:
    """Slack and SMS digest with a 30 s target; SMS digests are one segment."""
    policies = channel_policies(config(SLACK % "", SMS % ""))
    slack, sms = policies["slack"].digest, policies["sms"].digest
    assert slack is not None and sms is not None
    assert (slack.drain_target_s, slack.pace_per_s, sms.layout) == (30.0, 1.0, SMS_LAYOUT)
    assert not sms.fits("Digest D1: 2 alerts", "x" * 150)


def test_digest_can_be_disabled() -> None:
    """enabled: false sends every notification on its own."""
    policies = channel_policies(config(SLACK % ", digest: {enabled: false}"))
    assert policies["slack"].digest is None


def test_sms_digest_budget_cannot_exceed_max_segments() -> None:
    """digest.segments above max_segments is a configuration error naming both."""
    with pytest.raises(ConfigError, match=r"digest\.segments cannot exceed max_segments"):
        config(SMS % ", max_segments: 2, digest: {segments: 3}")


@pytest.mark.parametrize("link", ["https://x.example.com/?from={from}", "ftp://x.example.com/", "status"])
def test_digest_link_must_be_a_url_or_path_with_only_since(link: str) -> None:
    """A link is http(s) or an absolute path, and {since} is its only placeholder."""
    with pytest.raises(ConfigError, match=r"digest\.link"):
        config(SLACK % f', digest: {{link: "{link}"}}')


def test_documented_digest_snippet_loads() -> None:
    """The channels snippet in docs/digests.md is valid configuration."""
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / "digests.md").read_text(), re.DOTALL)
    (snippet,) = [doc for doc in map(yaml.safe_load, blocks) if isinstance(doc, dict) and "channels" in doc]
    names = list(snippet["channels"])
    routes = yaml.safe_dump({"routes": [{"match": {}, "healthy": names, "outage": names}]})
    text = BASE + yaml.safe_dump({"channels": snippet["channels"]}) + routes
    env = {"SLACK_BOT_TOKEN": "xoxb-doc", "TWILIO_AUTH_TOKEN": "doc-token"}
    parsed = parse_config(text, filename="digests.md", env=env)
    assert channel_policies(parsed)["oncall-sms"].digest is not None
