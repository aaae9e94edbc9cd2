"""The webhook channel: one signed POST per send (docs/channels.md, docs/channels-webhook.md).

Signed per Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id`` is the
notification id, so a receiver drops the repeats that at-least-once delivery can produce (the
idempotency key it was accepted under, which may be any text, is in the body). During a
secret rotation every secret signs (one ``v1,`` signature each). The body is the versioned JSON
document below, or a template's rendering (:mod:`channels.webhook_templates`, presets for
PagerDuty and Teams). Redirects are never followed (neither HTTP path below has redirect logic): a
signed POST replayed to another URL is not what the operator configured, so a 3xx is a
configuration problem (permanent). Destinations are vetted by the SSRF guard
(:mod:`channels.address_guard`) and the connection goes to the vetted address.

Credentials in the URL (``https://user:pass@host/hook``) go as ``Authorization: Basic`` (RFC 7617),
as httpx, curl and requests send them: the pool writes only the host and path, so they were
dropped and the receiver answered 401 to every send. The URL is kept without them; errors name
only the host, and the header is never logged. With an ``Authorization`` in ``headers`` as well,
which one was meant is unclear: a configuration error.

The POST goes out through :mod:`channels.http1_pool`, a kept-alive HTTP/1.1 pool (requests
written by h11's header rules, answers parsed by llhttp, :mod:`channels.http1`) that costs a
fraction of httpx's event-loop CPU per send (docs/performance.md, "Webhook delivery path"). An
injected httpx transport replaces it (a test double such as ``httpx.MockTransport``); the URL is
then pinned to the vetted address and the name carried in ``Host`` and ``sni_hostname``.

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
import base64
import ipaddress
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import h11
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
from channels.http1 import ConnectFailed, Endpoint, Headers, HttpError, InvalidRequest, Reply
from channels.http1_pool import Http1Pool
from channels.signing import sign_with, signing_keys
from channels.webhook_templates import JSON_CONTENT_TYPE, Template, message_fields, render_template

BODY_TYPE = "backchannel.notification"
BODY_VERSION = 1
USER_AGENT = "backchannel/0.1"

_TRANSIENT_4XX = frozenset({408, 425, 429})
#: The endpoint itself is wrong or gone, whatever we send: the channel is unusable, not the message.
_ENDPOINT_4XX = frozenset({401, 403, 404, 410})
#: headers the channel sets itself (or the connection frames): a configured one of these is dropped
_OURS = frozenset(
    {"content-type", "user-agent", "idempotency-key", "webhook-id", "webhook-timestamp", "webhook-signature"}
    | {"host", "content-length", "transfer-encoding", "connection"}
)
_CONNECT_ERRORS = (ConnectFailed, httpx.ConnectError)
#: json.dumps with these settings builds an encoder per call; one serves every body
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def render_body(message: OutboundMessage) -> bytes:
    """The versioned JSON document POSTed for ``message`` (documented in docs/channels.md)."""
    document: dict[str, Any] = {
        "type": BODY_TYPE,
        "version": BODY_VERSION,
        "id": message.notification_id,
        **message_fields(message),
    }
    return _ENCODER.encode(document).encode()


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²", which float() refuses
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
        self._url, credentials = _without_userinfo(_checked_url(url))
        self._keys = () if secret is None else signing_keys(secret)
        self._fixed_headers = _fixed_headers(headers or {}, content_type, credentials)
        self._timeout_s = timeout_s
        self._template = template
        self._options = dict(options or {})
        self._content_type = content_type
        self._allow_private = allow_private
        self._port = effective_port(self._url)
        self._transport = transport
        ssl_context = _ssl_context(verify)
        self._pool = Http1Pool(ssl_context) if transport is None else None
        self._resolve = resolver
        self._clock = clock
        #: an IP literal's vetted address, kept after its first send: it resolves to itself
        #: whatever the DNS says, so vetting it again per send only costs CPU (a name is
        #: resolved and vetted on every send, since what it resolves to may change)
        self._literal: list[IPAddress] | None = None

    async def send(self, message: OutboundMessage) -> Receipt:
        body = self._body(message)
        headers = self._headers(message.notification_id, body)
        host = self._url.host
        try:
            # One budget for the lookup and the whole exchange: a receiver dripping a byte at a
            # time must not hold the send for ever.
            async with asyncio.timeout(self._timeout_s):
                reply = await self._post(body, headers)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChannelError(f"webhook to {host} timed out", service_fault=True) from exc
        except httpx.UnsupportedProtocol as exc:
            raise ChannelConfigError(f"webhook URL scheme unusable for {host}") from exc
        except InvalidRequest as exc:
            raise ChannelError(f"webhook to {host}: {exc}", permanent=True) from exc
        except (HttpError, httpx.TransportError) as exc:
            raise ChannelError(f"webhook to {host} failed: {_describe(exc)}", service_fault=True) from exc
        return self._outcome(reply)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def _body(self, message: OutboundMessage) -> bytes:
        if self._template is None:
            return render_body(message)
        return render_template(
            self._template, message, options=self._options, content_type=self._content_type
        )

    def _headers(self, msg_id: str, body: bytes) -> Headers:
        key = msg_id.encode()
        headers = [*self._fixed_headers, (b"Idempotency-Key", key), (b"webhook-id", key)]
        if self._keys:
            timestamp = int(self._clock())
            headers.append((b"webhook-timestamp", str(timestamp).encode()))
            headers.append((b"webhook-signature", sign_with(self._keys, msg_id, timestamp, body).encode()))
        return headers

    async def _post(self, body: bytes, headers: Headers) -> Reply:
        addresses = self._literal or await self._vetted()
        for address in addresses[:-1]:
            try:
                return await self._post_to(address, body, headers)
            except _CONNECT_ERRORS:
                continue  # try the next vetted address, as a client's own connect loop would
        return await self._post_to(addresses[-1], body, headers)

    async def _vetted(self) -> list[IPAddress]:
        host = self._url.host
        addresses = await vetted_addresses(
            host, self._port, allow_private=self._allow_private, resolve=self._resolve
        )
        if _is_ip_literal(host):
            self._literal = addresses
        return addresses

    async def _post_to(self, address: IPAddress, body: bytes, headers: Headers) -> Reply:
        if self._pool is None:
            return await self._post_via_transport(address, body, headers)
        tls_hostname = self._url.host if self._url.scheme == "https" else None
        framing = [(b"Host", self._url.netloc), (b"Content-Length", str(len(body)).encode())]
        endpoint = Endpoint(str(address), self._port, tls_hostname)
        return await self._pool.post(endpoint, self._url.raw_path, [*framing, *headers], body)

    async def _post_via_transport(self, address: IPAddress, body: bytes, headers: Headers) -> Reply:
        assert self._transport is not None
        target = pinned_request_target(self._url, address)
        request = httpx.Request(
            "POST",
            target.url,
            content=body,
            headers=[*headers, *((k.encode(), v.encode()) for k, v in target.headers.items())],
            extensions={"timeout": httpx.Timeout(self._timeout_s).as_dict(), **target.extensions},
        )
        # The transport, not a client: a client would add env proxies (which resolve names
        # themselves, undoing the pinning), cookies, and an INFO log line with the full URL, whose
        # path or query is the credential of Teams, Discord or Slack hooks.
        response = await self._transport.handle_async_request(request)
        await response.aclose()  # the body is never used
        return Reply(
            response.status_code,
            response.reason_phrase,
            {name.lower(): value for name, value in response.headers.items()},
        )

    def _outcome(self, reply: Reply) -> Receipt:
        status = reply.status
        detail = f"HTTP {status} {reply.reason}".rstrip()
        if 200 <= status < 300:
            return Receipt(channel=self.name, detail=detail)
        where = f"webhook to {self._url.host}: {detail}"
        if status in _TRANSIENT_4XX or status >= 500:
            raise ChannelError(
                where,
                retry_after_s=retry_after_s(reply.headers.get("retry-after"), self._clock()),
                service_fault=status >= 500 or status == 408,
            )
        if 300 <= status < 400:
            raise ChannelError(f"{where} (redirects are not followed)", permanent=True, service_fault=True)
        raise ChannelError(where, permanent=True, service_fault=status in _ENDPOINT_4XX)


def _fixed_headers(
    configured: Mapping[str, str], content_type: str, credentials: str | None = None
) -> Headers:
    """The configured headers (ours replace any of the same name, in any case), then ours, checked;
    ``credentials``: the URL's, as an Authorization header."""
    pairs = [(k, v) for k, v in configured.items() if k.lower() not in _OURS]
    if credentials is not None:
        if any(k.lower() == "authorization" for k, _ in pairs):
            raise ChannelConfigError("webhook URL has credentials and headers an Authorization: give one")
        pairs.append(("Authorization", credentials))
    pairs += [("Content-Type", content_type), ("User-Agent", USER_AGENT)]
    encoded: Headers = []
    for name, value in pairs:
        try:
            header = (name.encode("ascii"), value.encode())
            h11.Request(method=b"POST", target=b"/", headers=[(b"Host", b"h"), header])
        except (UnicodeEncodeError, h11.LocalProtocolError):
            # Never quote the value: headers carry credentials (Authorization, API keys).
            raise ChannelConfigError(f"webhook header {name!r} is not a valid HTTP header") from None
        encoded.append(header)
    return encoded


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _checked_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ChannelConfigError("webhook URL is not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ChannelConfigError("webhook URL must be http(s)://host/...")
    return parsed


def _without_userinfo(url: httpx.URL) -> tuple[httpx.URL, str | None]:
    """``url`` without ``user:password@``, and those as ``Basic`` credentials (UTF-8, percent-decoded,
    as httpx's ``BasicAuth`` takes them from a URL), or None without userinfo."""
    if not url.userinfo:
        return url, None
    token = base64.b64encode(f"{url.username}:{url.password}".encode()).decode("ascii")
    return url.copy_with(username=None, password=None), f"Basic {token}"


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context httpx would build for ``verify`` (certifi's CAs, SSL_CERT_FILE), HTTP/1.1 only."""
    context = httpx.create_ssl_context(verify=_ssl_verify(verify))
    context.set_alpn_protocols(["http/1.1"])
    return context


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
