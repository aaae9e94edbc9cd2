"""The Slack channel: Block Kit messages through the Web API (bot token) or an incoming webhook.

HTTP stack: slack-sdk's *sync* ``WebClient``/``WebhookClient`` run in a thread (``asyncio.to_thread``).
The async clients would bring aiohttp's session lifecycle into the event loop beside httpx; the sync
clients use stdlib urllib, are the SDK's most used path, and a paced channel has at most one request
in flight per destination, so a thread per send is cheap. The price: a cancelled send keeps its
thread until ``timeout_s`` (whole seconds, as the SDK takes them) runs out.

Web API mode posts with ``chat.postMessage`` to each target: a channel id or ``#name``, a user id
(``U...``, a DM), or an email resolved once with ``users.lookupByEmail`` and cached. The label
``slack_thread_ts`` threads a follow-up: ``"channel:ts"`` (an earlier ``Receipt.remote_id``, which
lists every message a send posted, ``"C1:ts1,C2:ts2"``) posts into each of those threads; a bare
``ts`` threads under it in every target. Sends are paced per destination
(:class:`~channels.pacing.Pacer`) and serialised, so a burst arrives in order without a 429.

:meth:`SlackChannel.acknowledged` rewrites the messages of a send once its escalation is
acknowledged (``chat.update``): the Acknowledge button gives way to who acknowledged it.

Errors are mapped once, in :func:`_api_error` and :func:`_webhook_error`: see docs/channels-slack.md.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web import SlackResponse, WebClient
from slack_sdk.webhook import WebhookClient, WebhookResponse

from channels.base import Acknowledgement, ChannelConfigError, ChannelError, OutboundMessage, Receipt
from channels.pacing import Pacer
from channels.slack_interactions import ack_block

SLACK_API = "https://slack.com/api/"
# Block Kit limits: https://api.slack.com/reference/block-kit/blocks (header 150, section text 3000).
HEADER_MAX = 150
SECTION_MAX = 3000
# chat.postMessage truncates ``text`` past 40,000 characters and advises under 4,000.
TEXT_MAX = 4000
_SEVERITY_EMOJI = {"critical": ":rotating_light:", "high": ":red_circle:", "warning": ":warning:"}
THREAD_LABEL = "slack_thread_ts"
_REMEMBERED_SENDS = 4096
#: an edit (chat.update) refused for a rate limit or a fault on Slack's side: tries in all, the
#: pause between them when Slack names none, the longest Retry-After waited for
EDIT_TRIES = 3
EDIT_PAUSE_S = 1.0
EDIT_WAIT_MAX_S = 30.0

# https://api.slack.com/methods/chat.postMessage#errors and .../users.lookupByEmail#errors: these say
# the request, the token or the destination is wrong; sending the same thing again cannot succeed.
# Errors in neither set are treated as permanent too (Slack understood and refused the request).
_TRANSIENT = frozenset(
    {"ratelimited", "rate_limited", "message_limit_exceeded", "internal_error", "fatal_error",
     "service_unavailable", "request_timeout", "team_added_to_org"}
)  # fmt: skip
_SERVICE_FAULTS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})

R = TypeVar("R")
log = logging.getLogger(__name__)


class SlackChannel:
    """Post notifications to Slack; one send reaches every target or raises :class:`ChannelError`."""

    def __init__(
        self,
        name: str,
        *,
        token: str | None = None,
        webhook_url: str | None = None,
        targets: Sequence[str] = (),
        dm_recipients: bool = False,
        base_url: str = SLACK_API,
        timeout_s: float = 10.0,
        pace: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        _check_config(name, token, webhook_url, targets, dm_recipients, timeout_s)
        self.name = name
        self._targets = tuple(targets)
        self._dm_recipients = dm_recipients
        self._secrets = _secrets_of(token, webhook_url)
        sdk_log = _redacting_logger(name, self._secrets)
        timeout = max(1, math.ceil(timeout_s))
        self._web = WebClient(token, base_url, timeout, logger=sdk_log, retry_handlers=[]) if token else None
        self._hook = (
            WebhookClient(webhook_url, timeout, logger=sdk_log, retry_handlers=[]) if webhook_url else None
        )
        self._pacer = Pacer(pace, monotonic=clock, sleep=sleep)
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}
        self._user_ids: dict[str, str] = {}
        self._lookup_lock = asyncio.Lock()
        self._sent: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        #: the pacing key a channel id was posted under ("#ops" for C0OPS), so edits share its pace
        self._paced_as: dict[str, str] = {}

    async def send(self, message: OutboundMessage) -> Receipt:
        if self._hook is not None:
            return await self._send_webhook(self._hook, message)
        destinations = self._destinations(message)
        if not destinations:
            raise ChannelError(f"{self.name}: no Slack targets for {message.notification_id}", permanent=True)
        remote_ids: list[str] = []
        errors: list[ChannelError] = []
        for target, thread_ts in destinations:
            try:
                remote_ids.append(await self._deliver_once(target, thread_ts, message))
            except ChannelError as exc:
                errors.append(exc)
        return self._receipt(remote_ids, errors)

    async def acknowledged(self, remote_id: str, message: OutboundMessage, ack: Acknowledgement) -> int:
        """Rewrite the messages one send posted (its receipt's ``remote_id``) as ``message`` with
        who acknowledged it in place of the Acknowledge button; returns how many were rewritten.

        Every message is tried; ChannelError names those Slack refused. An incoming webhook
        cannot edit what it posted (its sends have no ``remote_id``): nothing to do.
        """
        if self._web is None:
            return 0
        text, blocks = render(replace(message, acknowledgeable=False))
        note = f"Acknowledged by {_escape(ack.by)} ({ack.via}) at {ack.at:%Y-%m-%d %H:%M} UTC"
        section = f":white_check_mark: *{_cut(note, SECTION_MAX - 30)}*"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": section}})
        text = _cut(f"{note}\n{text}", TEXT_MAX)
        updated, errors = 0, []
        for channel, ts in posted(remote_id):
            try:
                await self._update(channel, ts, text, blocks)
                updated += 1
            except ChannelError as exc:
                errors.append(f"{channel}:{ts}: {exc}")
        if errors:
            raise ChannelError(f"{self.name}: not updated: " + "; ".join(errors))
        return updated

    async def _update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """One ``chat.update``, tried again after a rate limit or a fault on Slack's side (it is
        Tier 3, about 50 a minute: acknowledging many alerts at once can draw 429s)."""
        assert self._web is not None
        key = self._paced_as.get(channel, channel)
        for tries_left in reversed(range(EDIT_TRIES)):
            try:
                async with self._locks.setdefault(key, asyncio.Lock()):
                    await self._pacer.acquire(key)
                    await self._call(self._web.chat_update, channel=channel, ts=ts, text=text, blocks=blocks)
                return
            except ChannelError as exc:
                if exc.permanent or not tries_left:
                    raise
                await self._sleep(min(exc.retry_after_s or EDIT_PAUSE_S, EDIT_WAIT_MAX_S))

    async def aclose(self) -> None:
        """Nothing to release: the sync SDK clients open one connection per request."""

    def _destinations(self, message: OutboundMessage) -> list[tuple[str, str | None]]:
        thread = message.thread or message.labels.get(THREAD_LABEL) or None
        if thread is not None and ":" in thread:
            return [(channel, ts) for channel, ts in posted(thread)]
        targets = self._targets + (message.recipients if self._dm_recipients else ())
        return [(target, thread) for target in dict.fromkeys(targets)]

    def _receipt(self, remote_ids: list[str], errors: list[ChannelError]) -> Receipt:
        transient = [e for e in errors if not e.permanent]
        if transient or not remote_ids:
            retry_after = max((e.retry_after_s or 0.0 for e in transient), default=0.0) or None
            raise ChannelError(
                "; ".join(str(e) for e in errors),
                permanent=not transient,
                retry_after_s=retry_after,
                service_fault=any(e.service_fault for e in errors),
                remote_id=",".join(remote_ids) or None,
            )
        detail = f"posted {len(remote_ids)}" + "".join(f"; not posted: {e}" for e in errors)
        return Receipt(channel=self.name, detail=detail, remote_id=",".join(remote_ids))

    async def _deliver_once(self, target: str, thread_ts: str | None, message: OutboundMessage) -> str:
        """Post to one target unless an earlier attempt of this notification already did."""
        key = (message.idempotency_key, target, thread_ts or "")
        if key in self._sent:
            return self._sent[key]
        remote_id = await self._post(await self._resolve(target), thread_ts, message)
        self._sent[key] = remote_id
        if len(self._sent) > _REMEMBERED_SENDS:
            self._sent.popitem(last=False)
        return remote_id

    async def _post(self, channel: str, thread_ts: str | None, message: OutboundMessage) -> str:
        assert self._web is not None
        text, blocks = render(message)
        metadata = {"event_type": "backchannel_notification", "event_payload": _metadata(message)}
        arguments: dict[str, Any] = {"channel": channel, "text": text, "blocks": blocks, "metadata": metadata}
        if thread_ts:
            arguments["thread_ts"] = thread_ts
        # Serialised per destination so a paced burst also arrives in order.
        async with self._locks.setdefault(channel, asyncio.Lock()):
            await self._pacer.acquire(channel)
            response = await self._call(self._web.chat_postMessage, unfurl_links=False, **arguments)
        if len(self._paced_as) < _REMEMBERED_SENDS:
            self._paced_as[str(response["channel"])] = channel
        return f"{response['channel']}:{response['ts']}"

    async def _resolve(self, target: str) -> str:
        if "@" not in target:
            return target
        async with self._lookup_lock:
            if target not in self._user_ids:
                assert self._web is not None
                response = await self._call(self._web.users_lookupByEmail, email=target)
                self._user_ids[target] = str(response["user"]["id"])
            return self._user_ids[target]

    async def _call(self, method: Callable[..., R], /, **arguments: Any) -> R:
        """Run one SDK call in a thread; the one place SDK and network errors become ChannelError."""
        try:
            return await asyncio.to_thread(method, **arguments)
        except SlackApiError as exc:
            raise _api_error(self.name, exc.response) from exc
        except SlackRequestError as exc:
            raise ChannelConfigError(_redact(f"{self.name}: {exc}", self._secrets)) from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = f"{self.name}: Slack unreachable: {type(exc).__name__}: {exc}"
            raise ChannelError(_redact(reason, self._secrets), service_fault=True) from exc

    async def _send_webhook(self, hook: WebhookClient, message: OutboundMessage) -> Receipt:
        text, blocks = render(message)
        body: dict[str, Any] = {"text": text, "blocks": blocks, "unfurl_links": False}
        thread_ts = (message.thread or message.labels.get(THREAD_LABEL, "")).rpartition(":")[2]
        if thread_ts:
            body["thread_ts"] = thread_ts
        async with self._locks.setdefault("webhook", asyncio.Lock()):
            await self._pacer.acquire("webhook")
            response = await self._call(hook.send_dict, body=body)
        if response.status_code != 200:
            raise _webhook_error(self.name, response)
        return Receipt(channel=self.name, detail="posted via incoming webhook")


def posted(remote_id: str) -> list[tuple[str, str]]:
    """The (channel, ts) of each message in a receipt's ``remote_id``: ``"C1:ts1,C2:ts2"``."""
    found = (part.partition(":") for part in remote_id.split(","))
    return [(channel, ts) for channel, colon, ts in found if channel and colon and ts]


def _api_error(name: str, response: SlackResponse) -> ChannelError:
    """Map a failed Web API call (https://api.slack.com/methods/chat.postMessage#errors) to our error."""
    status = response.status_code
    code = str(response.get("error", "") or f"HTTP {status}")[:200]
    if status == 429 or status >= 500:
        return _http_error(f"{name}: Slack HTTP {status} ({code})", status, response.headers)
    if status == 200 and code in _TRANSIENT:
        return ChannelError(f"{name}: Slack error {code}", service_fault=code in _SERVICE_FAULTS)
    return ChannelError(f"{name}: Slack error {code} (HTTP {status})", permanent=True)


def _webhook_error(name: str, response: WebhookResponse) -> ChannelError:
    """Incoming webhooks answer with an HTTP status and a plain-text code.

    https://api.slack.com/messaging/webhooks#handling_errors: 400 invalid_payload, 403
    action_prohibited, 404 channel_not_found / no_service, 410 channel_is_archived are permanent;
    500 rollup_error and 429 (with Retry-After) are worth retrying.
    """
    status, code = response.status_code, str(response.body or "")[:200]
    reason = f"{name}: Slack webhook HTTP {status} ({code})"
    if status == 429 or status >= 500:
        return _http_error(reason, status, response.headers)
    return ChannelError(reason, permanent=True)


def _http_error(reason: str, status: int, headers: Mapping[str, Any]) -> ChannelError:
    """429 and 5xx: retry later, no sooner than Retry-After when Slack sends one."""
    return ChannelError(reason, retry_after_s=_retry_after(headers), service_fault=status >= 500)


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    """Slack sends Retry-After in whole seconds (https://api.slack.com/apis/rate-limits)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def render(message: OutboundMessage) -> tuple[str, list[dict[str, Any]]]:
    """The ``text`` fallback (notifications, screen readers) and the Block Kit blocks for ``message``."""
    drill = "[DRILL] " if message.drill else ""
    title = f"{drill}{message.severity.upper()}: {message.subject}"
    emoji = _SEVERITY_EMOJI.get(message.severity, ":information_source:")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"{emoji} {title}", HEADER_MAX), "emoji": True},
        }
    ]
    if message.body.strip():
        excerpt = _cut(_escape(message.body), SECTION_MAX)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": excerpt}})
    context = (
        f"source *{_escape(message.source)}* | id `{message.notification_id}`"
        f" | attempt {message.attempt} | primary email {message.provider_state}"
    )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, SECTION_MAX)}]})
    if message.acknowledgeable:
        blocks.append(ack_block(message.notification_id))
    text = _cut(f"{title}\n{message.body}".strip(), TEXT_MAX)
    return text, blocks


def _escape(text: str) -> str:
    """Slack mrkdwn control characters: https://api.slack.com/reference/surfaces/formatting#escaping."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending in an ellipsis when shortened and never inside an entity."""
    if len(text) <= limit:
        return text
    kept = text[: limit - 1]
    amp = kept.rfind("&")
    if amp > kept.rfind(";"):
        kept = kept[:amp]
    return kept + "\u2026"


def _metadata(message: OutboundMessage) -> dict[str, Any]:
    return {
        "notification_id": message.notification_id,
        "idempotency_key": message.idempotency_key,
        "severity": message.severity,
        "attempt": message.attempt,
    }


def _check_config(
    name: str,
    token: str | None,
    webhook_url: str | None,
    targets: Sequence[str],
    dm_recipients: bool,
    timeout_s: float,
) -> None:
    if (token is None) == (webhook_url is None):
        raise ChannelConfigError(f"{name}: give exactly one of a bot token or an incoming webhook URL")
    if token is not None and not (targets or dm_recipients):
        raise ChannelConfigError(f"{name}: a bot token needs targets or dm_recipients")
    if webhook_url is not None and (targets or dm_recipients):
        raise ChannelConfigError(f"{name}: an incoming webhook posts to its own channel; drop targets")
    if timeout_s <= 0:
        raise ChannelConfigError(f"{name}: timeout_s must be positive")


def _secrets_of(token: str | None, webhook_url: str | None) -> tuple[str, ...]:
    secrets = [token or "", webhook_url or ""]
    if webhook_url and "/services/" in webhook_url:
        secrets.append(webhook_url.split("/services/", 1)[1])
    return tuple(s for s in secrets if s)


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


def _redacting_logger(name: str, secrets: Sequence[str]) -> logging.Logger:
    """A logger private to this channel (not in the registry) that propagates to ``channels.slack``.

    The SDK logs webhook URLs (secret) at DEBUG: its records are scrubbed before any handler sees them.
    """

    def scrub(record: logging.LogRecord) -> bool:
        record.msg, record.args = _redact(record.getMessage(), secrets), None
        return True

    sdk_log = logging.Logger(f"{__name__}.sdk.{name}")
    sdk_log.parent = log
    sdk_log.addFilter(scrub)
    return sdk_log
