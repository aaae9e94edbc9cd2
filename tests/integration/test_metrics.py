"""Prometheus metrics after a scripted scenario: accept, deliver, outage, failover, recovery."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import SmtpServer, WebhookReceiver
from tests.support import daemon_api, until

TOKEN = "metrics-test-token-123456"
SECRET = "whsec_" + base64.b64encode(b"metrics-test-webhook-secret").decode()
CONFIG = """\
store: {{path: {store}}}
api: {{listen: "127.0.0.1:0", tokens: [{{name: prometheus, token: "${{TOKEN}}"}}]}}
provider:
  name: p
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, timeout: 1s}}
  mail_from: bc@test.example
  checks: [{{type: smtp, every: 200ms, timeout: 150ms}}]
  failure_threshold: 2
  success_threshold: 2
channels:
  email: {{type: email, to: [ops@test.example]}}
  hook: {{type: webhook, url: "{hook_url}", secret: "${{SECRET}}", allow_private: true}}
routes:
  - {{match: {{severity: [critical]}}, healthy: [email], outage: [hook]}}
  - {{match: {{}}, healthy: [email], outage: defer}}
dispatch: {{poll: 100ms, retry: {{initial: 50ms, max: 200ms}}}}
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def test_metrics_after_failover_and_recovery(tmp_path: Path) -> None:
    """Counters, histograms and gauges tell the story of an outage and a recovery."""
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        text = CONFIG.format(store=tmp_path / "o.db", smtp_port=smtp.port, hook_url=hook.url)
        async with daemon_api(text, TOKEN, {"TOKEN": TOKEN, "SECRET": SECRET}) as (_, api):

            async def state_is(state: str) -> bool:
                return bool((await api.get("/v1/status")).json()["provider"]["state"] == state)

            await api.post("/v1/notifications", json={"severity": "critical", "subject": "a"})
            await api.post("/v1/notifications", json={"severity": "info", "subject": "b"})
            await smtp.wait_for_async(2)
            smtp.stop()
            await until(lambda: state_is("outage"))
            await api.post("/v1/notifications", json={"severity": "critical", "subject": "c"})
            await api.post("/v1/notifications", json={"severity": "warning", "subject": "d"})
            await hook.wait_for_async(1)
            during = samples((await api.get("/metrics")).text)
            smtp.start()
            await until(lambda: state_is("healthy"))
            await smtp.wait_for_async(3)

            async def all_delivered() -> bool:
                scraped = samples((await api.get("/metrics")).text)
                return scraped[("backchannel_queue_notifications", (("status", "delivered"),))] == 4

            await until(all_delivered)
            after = samples((await api.get("/metrics")).text)
            # on a loaded machine a check may time out while recovering and go back to outage
            events = (await api.get("/v1/status")).json()["provider"]["events"]
            async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous_client:
                anonymous = await anonymous_client.get("/metrics")
    accepted = ("backchannel_notifications_accepted_total", (("severity", "critical"), ("source", "api")))
    assert after[accepted] == 2
    assert after[("backchannel_provider_state", (("state", "healthy"),))] == 1
    assert during[("backchannel_provider_state", (("state", "outage"),))] == 1
    assert during[("backchannel_queue_notifications", (("status", "held"),))] == 1
    assert during[("backchannel_oldest_pending_age_seconds", ())] > 0
    delivered = (
        "backchannel_delivery_attempts_total",
        (("channel", "hook"), ("outcome", "delivered"), ("severity", "critical")),
    )
    assert after[delivered] == 1
    entered = [e["to"] for e in events]
    assert entered.count("outage") >= 1 and entered.count("healthy") == 1
    for state in ("outage", "healthy"):
        assert after[("backchannel_provider_transitions_total", (("to_state", state),))] == entered.count(
            state
        )
    assert after[("backchannel_checks_total", (("check", "smtp"), ("status", "down")))] >= 2
    assert (
        after[("backchannel_delivery_latency_seconds_count", (("channel", "email"), ("severity", "warning")))]
        == 1
    )
    assert after[("backchannel_queue_notifications", (("status", "delivered"),))] == 4
    assert anonymous.status_code == 401


async def test_alerted_counters_are_exported_at_zero_from_the_start(tmp_path: Path) -> None:
    """Reloads by result and transitions by state are 0 before the first one, so increase() in
    Prometheus (the shipped BackchannelConfigReloadRejected rule) sees the first one."""
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        text = CONFIG.format(store=tmp_path / "o.db", smtp_port=smtp.port, hook_url=hook.url)
        async with daemon_api(text, TOKEN, {"TOKEN": TOKEN, "SECRET": SECRET}) as (_, api):
            scraped = samples((await api.get("/metrics")).text)
    for result in ("ok", "rejected"):
        assert scraped[("backchannel_config_reloads_total", (("result", result),))] == 0
    for state in ("outage", "recovering", "healthy"):
        assert ("backchannel_provider_transitions_total", (("to_state", state),)) in scraped
