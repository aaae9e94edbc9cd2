"""Fixtures for contract tests: one Prism per vendor spec, shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.prism import prism_mock


@pytest.fixture(scope="session")
def slack_prism() -> Iterator[str]:
    """Prism serving Slack's Web API spec (plus the incoming-webhook route); yields its base URL."""
    with prism_mock("slack_web_api.oas3.json") as url:
        yield url
