"""Slack's answers mapped to :class:`~channels.base.ChannelError`, in one place.

A Web API call fails with HTTP 200 and ``ok: false`` plus an error code, or with an HTTP status
(429 with ``Retry-After``, 5xx); an incoming webhook answers with an HTTP status and a plain-text
code. Which of them are worth retrying, and which say Slack itself is unwell, is decided here from
Slack's documentation (the links are beside each rule); docs/channels-slack.md has the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookResponse

from channels.base import ChannelError

# Of the codes at https://api.slack.com/methods/chat.postMessage#errors (and users.lookupByEmail's,
# chat.update's), these are worth trying again, and SERVICE_FAULTS say Slack itself is unwell. Every
# other code says the request, the token or the destination is wrong (Slack understood and refused
# it): sending the same thing again cannot succeed, so it is permanent.
TRANSIENT = frozenset(
    {"ratelimited", "rate_limited", "message_limit_exceeded", "internal_error", "fatal_error",
     "service_unavailable", "request_timeout", "team_added_to_org"}
)  # fmt: skip
SERVICE_FAULTS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})


def api_error(name: str, response: SlackResponse) -> ChannelError:
    """Map a failed Web API call (https://api.slack.com/methods/chat.postMessage#errors) to our error."""
    status = response.status_code
    code = str(response.get("error", "") or f"HTTP {status}")[:200]
    if status == 429 or status >= 500:
        return http_error(f"{name}: Slack HTTP {status} ({code})", status, response.headers)
    if status == 200 and code in TRANSIENT:
        return ChannelError(f"{name}: Slack error {code}", service_fault=code in SERVICE_FAULTS)
    return ChannelError(f"{name}: Slack error {code} (HTTP {status})", permanent=True)


def webhook_error(name: str, response: WebhookResponse) -> ChannelError:
    """Incoming webhooks answer with an HTTP status and a plain-text code.

    https://api.slack.com/messaging/webhooks#handling_errors: 400 invalid_payload, 403
    action_prohibited, 404 channel_not_found / no_service, 410 channel_is_archived are permanent;
    500 rollup_error and 429 (with Retry-After) are worth retrying.
    """
    status, code = response.status_code, str(response.body or "")[:200]
    reason = f"{name}: Slack webhook HTTP {status} ({code})"
    if status == 429 or status >= 500:
        return http_error(reason, status, response.headers)
    return ChannelError(reason, permanent=True)


def http_error(reason: str, status: int, headers: Mapping[str, Any]) -> ChannelError:
    """429 and 5xx: retry later, no sooner than Retry-After when Slack sends one."""
    return ChannelError(reason, retry_after_s=retry_after(headers), service_fault=status >= 500)


def retry_after(headers: Mapping[str, Any]) -> float | None:
    """Slack sends Retry-After in whole seconds (https://api.slack.com/apis/rate-limits)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
