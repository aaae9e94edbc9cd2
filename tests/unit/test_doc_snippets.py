"""The channel configuration snippets in docs/ are valid configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from daemon.config import parse_config
from daemon.config_directory import DirectoryConfig

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


@pytest.mark.parametrize("page", ["policies.md", "directory.md"])
def test_directory_snippets_load(page: str) -> None:
    """Every directory: snippet of the page validates (its groups name people it defines)."""
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)
    found = [
        doc["directory"]
        for doc in map(yaml.safe_load, blocks)
        if isinstance(doc, dict) and "directory" in doc
    ]
    assert found, f"no directory snippet in {page}"
    for directory in found:
        DirectoryConfig.model_validate(directory)
