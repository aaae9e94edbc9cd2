"""Schemathesis against the daemon's own /openapi.json: no 5xx, no response that breaks the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.acceptance.harness import TOKEN, DaemonProcess
from tests.servers import SmtpServer, WebhookReceiver

EXAMPLES = 25


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        running = DaemonProcess(
            tmp_path_factory.mktemp("fuzz"), smtp_port=smtp.port, hook_url=hook.url, every="1h"
        )
        running.start()
        try:
            yield running
        finally:
            running.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_responses_match_the_schema(daemon: DaemonProcess, mode: GenerationMode) -> None:
    """Generated requests, valid and invalid, never get a 5xx, and every answer matches the schema."""
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{daemon.api_port}/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

        try:
            check()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid


def test_schema_file_is_served(daemon: DaemonProcess, tmp_path: Path) -> None:
    """The OpenAPI document is served without a token and names the intake operation."""
    import httpx

    spec = httpx.get(f"http://127.0.0.1:{daemon.api_port}/openapi.json").json()
    assert "/v1/notifications" in spec["paths"]
