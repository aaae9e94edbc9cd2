"""The webhook channel: one signed POST per send (docs/channels.md, docs/channels-webhook.md).

Signed per Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id`` is the
idempotency key, so a receiver drops the repeats that at-least-once delivery can produce. During a
secret rotation every secret signs (one ``v1,`` signature each). The body is the versioned JSON
document below, or a template's rendering (:mod:`channels.webhook_templates`, presets for
PagerDuty and Teams). Redirects are never followed (the request goes to the transport, which has
no redirect logic): a signed POST replayed to another URL is not what the operator configured, so
a 3xx is a configuration problem (permanent). Destinations are vetted by the SSRF guard
(:mod:`channels.address_guard`) and the connection goes to the vetted address.

Outcomes (RFC 9110 status semantics, https://www.rfc-editor.org/rfc/rfc9110#section-15; they match
PagerDuty's documented retry rules, 202 / 400 / 429 / 5xx,
https://developer.pagerduty.com/docs/events-api-v2/overview/#response-codes--retry-logic):

========================================  =========  =============
response                                  permanent  service_fault
========================================  =========  =============
2xx                                       delivered
408, 425, 429 (Retry-After honoured)      no         408 only
5xx (Retry-After honoured)                no         yes
timeout, refused, reset, DNS failure      no         yes
3xx, 401, 403, 404, 410                   yes        yes
other 4xx (the body was rejected)         yes        no
refused by the SSRF guard                 yes        no
template failed or rendered bad JSON      yes        no
========================================  =========  =============
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from channels.address_guard import (
    IPAddress,
    Resolver,
    effective_port,
    pinned_request_target,
    system_resolver,
    vetted_addresses,
)
from channels.base import ChannelConfigError, ChannelError, OutboundMessage, Receipt
from channels.signing import secret_list, sign
from channels.webhook_templates import JSON_CONTENT_TYPE, Template, message_fields, render_template

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
        **message_fields(message),
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
    """POST each message, signed, to one URL: the versioned JSON document or a template's rendering."""

    def __init__(
        self,
        name: str,
        url: str,
        secret: str | Sequence[str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        template: Template | None = None,
        options: Mapping[str, str] | None = None,
        content_type: str = JSON_CONTENT_TYPE,
        verify: bool | str = True,
        allow_private: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._url = _checked_url(url)
        self._secrets = () if secret is None else secret_list(secret)
        self._extra_headers = dict(headers or {})
        self._timeout_s = timeout_s
        self._timeout = httpx.Timeout(timeout_s)
        self._template = template
        self._options = dict(options or {})
        self._content_type = content_type
        self._allow_private = allow_private
        self._owns_transport = transport is None
        self._transport = transport or httpx.AsyncHTTPTransport(verify=_ssl_verify(verify), retries=0)
        self._resolve = resolver
        self._clock = clock

    async def send(self, message: OutboundMessage) -> Receipt:
        body = self._body(message)
        headers = self._headers(message.idempotency_key, body)
        host = self._url.host
        try:
            # One budget for the lookup and the exchange: httpx's timeouts are per phase, so a
            # receiver dripping a byte at a time would otherwise hold the send for ever.
            async with asyncio.timeout(self._timeout_s):
                response = await self._post(body, headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChannelError(f"webhook to {host} timed out", service_fault=True) from exc
        except httpx.UnsupportedProtocol as exc:
            raise ChannelConfigError(f"webhook URL scheme unusable for {host}") from exc
        except httpx.TransportError as exc:
            raise ChannelError(f"webhook to {host} failed: {_describe(exc)}", service_fault=True) from exc
        return self._outcome(response)

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._transport.aclose()

    def _body(self, message: OutboundMessage) -> bytes:
        if self._template is None:
            return render_body(message)
        return render_template(
            self._template, message, options=self._options, content_type=self._content_type
        )

    def _headers(self, msg_id: str, body: bytes) -> httpx.Headers:
        headers = httpx.Headers(self._extra_headers)
        # Ours replace a configured header of the same name (httpx.Headers is case-insensitive).
        headers["Content-Type"] = self._content_type
        headers["User-Agent"] = USER_AGENT
        headers["Idempotency-Key"] = msg_id
        headers["webhook-id"] = msg_id
        if self._secrets:
            timestamp = int(self._clock())
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(self._secrets, msg_id, timestamp, body)
        return headers

    async def _post(self, body: bytes, headers: httpx.Headers) -> httpx.Response:
        port = effective_port(self._url)
        addresses = await vetted_addresses(
            self._url.host, port, allow_private=self._allow_private, resolve=self._resolve
        )
        for address in addresses[:-1]:
            try:
                return await self._post_to(address, body, headers)
            except httpx.ConnectError:
                continue  # try the next vetted address, as a client's own connect loop would
        return await self._post_to(addresses[-1], body, headers)

    async def _post_to(self, address: IPAddress, body: bytes, headers: httpx.Headers) -> httpx.Response:
        target = pinned_request_target(self._url, address)
        request = httpx.Request(
            "POST",
            target.url,
            content=body,
            headers=[*headers.multi_items(), *target.headers.items()],
            extensions={"timeout": self._timeout.as_dict(), **target.extensions},
        )
        # The transport, not a client: a client would add env proxies (which resolve names
        # themselves, undoing the pinning), cookies, and an INFO log line with the full URL, whose
        # path or query is the credential of Teams, Discord or Slack hooks.
        response = await self._transport.handle_async_request(request)
        await response.aclose()  # the body is never used; closing frees the connection
        return response

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


def _ssl_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """``verify`` as httpx takes it: a CA bundle path becomes a context (a str is deprecated in 0.28)."""
    if isinstance(verify, bool):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise ChannelConfigError(f"webhook CA bundle {verify} is unreadable: {exc}") from exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
