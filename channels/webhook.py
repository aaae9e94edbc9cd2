"""The webhook channel: one signed JSON POST per send (body format in docs/channels.md).

Signed per Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id`` is the
idempotency key, so a receiver drops the repeats that at-least-once delivery can produce.
Redirects are not followed: a signed POST replayed to another URL is not what the operator
configured, so a 3xx is a configuration problem (permanent).

Outcomes (RFC 9110 status semantics, https://www.rfc-editor.org/rfc/rfc9110#section-15):

========================================  =========  =============
response                                  permanent  service_fault
========================================  =========  =============
2xx                                       delivered
408, 425, 429 (Retry-After honoured)      no         408 only
5xx (Retry-After honoured)                no         yes
timeout, refused, reset                   no         yes
3xx, 401, 403, 404, 410                   yes        yes
other 4xx (the body was rejected)         yes        no
========================================  =========  =============
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from channels.base import ChannelConfigError, ChannelError, OutboundMessage, Receipt
from channels.signing import decode_secret, sign

BODY_TYPE = "backchannel.notification"
BODY_VERSION = 1
USER_AGENT = "backchannel/0.1"

_TRANSIENT_4XX = frozenset({408, 425, 429})
#: The endpoint itself is wrong or gone, whatever we send: the channel is unusable, not the message.
_ENDPOINT_4XX = frozenset({401, 403, 404, 410})


def render_body(message: OutboundMessage) -> bytes:
    """The versioned JSON document POSTed for ``message`` (documented in docs/channels.md)."""
    document: dict[str, Any] = {
        "type": BODY_TYPE,
        "version": BODY_VERSION,
        "id": message.notification_id,
        "idempotency_key": message.idempotency_key,
        "severity": message.severity,
        "subject": message.subject,
        "body": message.body,
        "source": message.source,
        "recipients": list(message.recipients),
        "labels": dict(message.labels),
        "created_at": message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "attempt": message.attempt,
        "provider_state": message.provider_state,
        "drill": message.drill,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class WebhookChannel:
    """POST each message as signed JSON to one URL."""

    def __init__(
        self,
        name: str,
        url: str,
        secret: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._url = _checked_url(url)
        decode_secret(secret)
        self._secret = secret
        self._extra_headers = dict(headers or {})
        self._timeout = httpx.Timeout(timeout_s)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        self._clock = clock

    async def send(self, message: OutboundMessage) -> Receipt:
        body = render_body(message)
        try:
            response = await self._client.post(
                self._url,
                content=body,
                headers=self._headers(message.idempotency_key, body),
                timeout=self._timeout,
                follow_redirects=False,
            )
        except httpx.TimeoutException as exc:
            raise ChannelError(f"webhook to {self._url.host} timed out", service_fault=True) from exc
        except httpx.UnsupportedProtocol as exc:
            raise ChannelConfigError(f"webhook URL scheme unusable for {self._url.host}") from exc
        except httpx.TransportError as exc:
            raise ChannelError(
                f"webhook to {self._url.host} failed: {_describe(exc)}", service_fault=True
            ) from exc
        return self._outcome(response)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _headers(self, msg_id: str, body: bytes) -> dict[str, str]:
        timestamp = int(self._clock())
        return {
            **self._extra_headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": msg_id,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, msg_id, timestamp, body),
        }

    def _outcome(self, response: httpx.Response) -> Receipt:
        status = response.status_code
        detail = f"HTTP {status} {response.reason_phrase}".rstrip()
        if 200 <= status < 300:
            return Receipt(channel=self.name, detail=detail)
        where = f"webhook to {self._url.host}: {detail}"
        if status in _TRANSIENT_4XX or status >= 500:
            raise ChannelError(
                where,
                retry_after_s=retry_after_s(response.headers.get("Retry-After"), self._clock()),
                service_fault=status >= 500 or status == 408,
            )
        if 300 <= status < 400:
            raise ChannelError(f"{where} (redirects are not followed)", permanent=True, service_fault=True)
        raise ChannelError(where, permanent=True, service_fault=status in _ENDPOINT_4XX)


def _checked_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ChannelConfigError("webhook URL is not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ChannelConfigError("webhook URL must be http(s)://host/...")
    return parsed


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
