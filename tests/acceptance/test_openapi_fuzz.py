"""Schemathesis against the daemon's own /openapi.json: no 5xx, no response that breaks the schema.

The same document drives the intake workers' port (``intake.workers``), a server of its own
(:mod:`daemon.api.lean_http`) that must answer its three operations as the API port does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.acceptance.harness import TOKEN, DaemonProcess, free_port, until
from tests.servers import SmtpServer, WebhookReceiver

EXAMPLES = 25
#: what the intake workers serve of the API (every other operation is the API port's)
INTAKE_OPERATIONS = {
    ("POST", "/v1/notifications"),
    ("POST", "/v1/intake/alertmanager"),
    ("POST", "/v1/intake/grafana"),
}


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


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, int]]:
    """A daemon with one intake worker: its API port serves the schema, the worker's port is fuzzed."""
    port = free_port()
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        running = DaemonProcess(
            tmp_path_factory.mktemp("fuzz-workers"),
            smtp_port=smtp.port,
            hook_url=hook.url,
            every="1h",
            extra=f"intake: {{workers: {{listen: '127.0.0.1:{port}', count: 1}}}}",
        )
        running.start()
        try:
            until(lambda: _serving(port), what="the intake worker serving")
            yield running, port
        finally:
            running.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_and_responses_match_the_schema(daemon: DaemonProcess, mode: GenerationMode) -> None:
    """Generated requests, valid and invalid, never get a 5xx, and every answer matches the schema."""
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{daemon.api_port}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    _fuzz(operations, mode, f"http://127.0.0.1:{daemon.api_port}")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_intake_workers_port_answers_by_the_same_schema(
    workers: tuple[DaemonProcess, int], mode: GenerationMode
) -> None:
    """The intake operations, fuzzed on the workers' port: no 5xx, every answer by the document."""
    daemon, port = workers
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{daemon.api_port}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    intake = [op for op in operations if (op.method.upper(), op.path) in INTAKE_OPERATIONS]
    assert len(intake) == len(INTAKE_OPERATIONS)
    _fuzz(intake, mode, f"http://127.0.0.1:{port}")


def _fuzz(operations: list[Any], mode: GenerationMode, base_url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=base_url, headers=headers, checks=[not_a_server_error, response_schema_conformance]
            )

        try:
            check()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid


def _serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_schema_file_is_served(daemon: DaemonProcess, tmp_path: Path) -> None:
    """The OpenAPI document is served without a token and names the intake operation."""
    spec = httpx.get(f"http://127.0.0.1:{daemon.api_port}/openapi.json").json()
    assert "/v1/notifications" in spec["paths"]


def test_every_reference_in_the_document_resolves(daemon: DaemonProcess) -> None:
    """Each ``$ref`` points at something in the document (the submit body's once pointed at
    ``#/$defs/...``, which resolves against the root: fuzzers and client generators saw no body)."""
    spec = httpx.get(f"http://127.0.0.1:{daemon.api_port}/openapi.json").json()
    refs = list(_refs(spec))
    assert any("NotificationIn" in ref for ref in refs)
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = spec
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
