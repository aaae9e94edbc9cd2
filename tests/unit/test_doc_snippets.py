"""The channel configuration snippets in docs/ are valid configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from daemon.config import parse_config

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["channels.md", "channels-webhook.md", "channels-slack.md", "channels-sms.md"]
BASE = """\
store: {path: /tmp/x.db}
api: {tokens: [{name: t, token: t0123456789}]}
provider: {name: p, smtp: {host: smtp.example.com, username: ops@example.com, password: pw}}
"""


def snippets(page: str) -> list[dict[str, object]]:
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)
    return [doc for doc in (yaml.safe_load(b) for b in blocks) if isinstance(doc, dict) and "channels" in doc]


@pytest.mark.parametrize("page", PAGES)
def test_channel_snippets_load(page: str) -> None:
    """Every channels: snippet of the page validates, with its ${VARS} set."""
    found = snippets(page)
    assert found, f"no channels snippet in {page}"
    for snippet in found:
        channels = yaml.safe_dump({"channels": snippet["channels"]})
        names = list(snippet["channels"])  # type: ignore[call-overload]
        # the snippet's own routes may name channels defined elsewhere on the page
        routes = yaml.safe_dump({"routes": [{"match": {}, "healthy": names, "outage": names}]})
        text = BASE + channels + routes
        env = {name: _value(name) for name in re.findall(r"\$\{(\w+)\}", text)}
        parse_config(text, filename=page, env=env)


def _value(name: str) -> str:
    if "URL" in name:
        return "https://hooks.example.com/" + name.lower()
    if "SECRET" in name:
        return "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    return "xoxb-value-for-" + name.lower()
