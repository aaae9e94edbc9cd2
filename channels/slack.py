"""The Slack channel: Block Kit messages through the Web API (bot token) or an incoming webhook.

HTTP stack: slack-sdk's *sync* ``WebClient``/``WebhookClient`` run in the channel's own threads
(:class:`~channels.threads.SdkThreads`), each call within a deadline a second past ``timeout_s``.
The async clients would bring aiohttp's session lifecycle into the event loop beside httpx; the sync
clients use stdlib urllib, are the SDK's most used path, and a paced channel has at most one request
in flight per destination, so four threads carry its sends. The price: a call past its deadline keeps
its thread until it ends on its own (urllib's timeout bounds each socket operation; an answer that
trickles in may hold it indefinitely), and the channel has four.

Web API mode posts with ``chat.postMessage`` to each target: a channel id or ``#name``, a user id
(``U...``, a DM), or an email resolved once with ``users.lookupByEmail`` and cached.

Threads: ``OutboundMessage.thread`` (the dispatcher sets it from the store: the ``remote_id`` of
the send a follow-up follows, ``"C1:ts1,C2:ts2"``) posts into each of those threads. The label
``slack_thread_ts`` does the same; the daemon's intakes strip or refuse it (a label from an alert
or an API caller must not redirect a post to a channel of its choosing), so only backchannel's
own code can set it. A bare ``ts`` names one message in a channel it does not say: it threads only
the target that posted it (remembered by this channel), or the only target; otherwise the post
goes to the top level, never under a ts from another channel. Sends are paced per destination
(:class:`~channels.pacing.Pacer`) and serialised, so a burst arrives in order without a 429.

:meth:`SlackChannel.acknowledged` rewrites the messages of a send once its escalation is
acknowledged (``chat.update``): the Acknowledge button gives way to who acknowledged it.

Messages are rendered in :mod:`channels.slack_blocks`; errors are mapped once, in
:mod:`channels.slack_errors` (docs/channels-slack.md has the table).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from channels.base import Acknowledgement, ChannelConfigError, ChannelError, OutboundMessage, Receipt
from channels.pacing import Pacer
from channels.sends import LIMIT, Sends
from channels.slack_blocks import SECTION_MAX, TEXT_MAX, cut, escape, metadata, render
from channels.slack_errors import api_error, webhook_error
from channels.threads import CallTimedOut, SdkThreads

SLACK_API = "https://slack.com/api/"
THREAD_LABEL = "slack_thread_ts"
#: an edit (chat.update) refused for a rate limit or a fault on Slack's side: tries in all, the
#: pause between them when Slack names none, the longest Retry-After waited for (a longer one: given up)
EDIT_TRIES = 3
EDIT_PAUSE_S = 1.0
EDIT_WAIT_MAX_S = 30.0

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
        self._threads = SdkThreads(name, timeout)
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}
        self._user_ids: dict[str, str] = {}
        self._lookup_lock = asyncio.Lock()
        self._sent: Sends[tuple[str, str, str]] = Sends()
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
        note = f"Acknowledged by {escape(ack.by)} ({escape(ack.via)}) at {ack.at:%Y-%m-%d %H:%M} UTC"
        section = f":white_check_mark: *{cut(note, SECTION_MAX - 30)}*"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": section}})
        text = cut(f"{note}\n{text}", TEXT_MAX)
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
                wait = exc.retry_after_s or EDIT_PAUSE_S
                if exc.permanent or not tries_left or wait > EDIT_WAIT_MAX_S:
                    raise
                await self._sleep(wait)

    async def aclose(self) -> None:
        """The channel's threads (the sync SDK clients open one connection per request)."""
        self._threads.close()

    def _destinations(self, message: OutboundMessage) -> list[tuple[str, str | None]]:
        thread = message.thread or message.labels.get(THREAD_LABEL) or None
        if thread is not None and ":" in thread:
            return [(channel, ts) for channel, ts in posted(thread)]
        targets = list(dict.fromkeys(self._targets + (message.recipients if self._dm_recipients else ())))
        origin = None if thread is None else self._origin_of(thread, targets)
        return [(target, thread if target == origin else None) for target in targets]

    def _origin_of(self, ts: str, targets: list[str]) -> str | None:
        """The target a bare ``ts`` was posted to: one this channel remembers posting it to, or
        the only target. A ts is unique only within its channel: under another it is not a thread."""
        for (_, target, _), remote_id in self._sent.newest_first():
            if any(posted_ts == ts for _, posted_ts in posted(remote_id)):
                return target
        return targets[0] if len(targets) == 1 else None

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
        """Post to one target unless an earlier attempt of this notification already did: one
        before (a retry after another target failed), or one that held the destination while
        this waited for it (the same delivery claimed again while a slow send still ran)."""
        key = (message.idempotency_key, target, thread_ts or "")
        if (sent := self._sent.get(key)) is not None:
            return sent
        channel = await self._resolve(target)
        # Serialised per destination so a paced burst also arrives in order.
        async with self._locks.setdefault(channel, asyncio.Lock()):
            if (sent := self._sent.get(key)) is not None:
                return sent
            await self._pacer.acquire(channel)
            remote_id = await self._post(channel, thread_ts, message)
        self._sent.remember(key, remote_id)
        return remote_id

    async def _post(self, channel: str, thread_ts: str | None, message: OutboundMessage) -> str:
        assert self._web is not None
        text, blocks = render(message)
        event = {"event_type": "backchannel_notification", "event_payload": metadata(message)}
        arguments: dict[str, Any] = {"channel": channel, "text": text, "blocks": blocks, "metadata": event}
        if thread_ts:
            arguments["thread_ts"] = thread_ts
        response = await self._call(self._web.chat_postMessage, unfurl_links=False, **arguments)
        if len(self._paced_as) < LIMIT:
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
            return await self._threads.run(method, **arguments)
        except CallTimedOut as exc:
            raise ChannelError(f"{self.name}: Slack did not answer: {exc}", service_fault=True) from exc
        except SlackApiError as exc:
            raise api_error(self.name, exc.response) from exc
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
            raise webhook_error(self.name, response)
        return Receipt(channel=self.name, detail="posted via incoming webhook")


def posted(remote_id: str) -> list[tuple[str, str]]:
    """The (channel, ts) of each message in a receipt's ``remote_id``: ``"C1:ts1,C2:ts2"``."""
    found = (part.partition(":") for part in remote_id.split(","))
    return [(channel, ts) for channel, colon, ts in found if channel and colon and ts]


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
    They are capped at INFO: the SDK logs ERROR for a request that failed to connect or timed out,
    which the dispatcher already logs as the delivery's outcome (a retry, at INFO), so an ordinary
    transient failure filled ``journalctl -p err`` with a second, louder line.
    """

    def scrub(record: logging.LogRecord) -> bool:
        record.msg, record.args = _redact(record.getMessage(), secrets), None
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True

    sdk_log = logging.Logger(f"{__name__}.sdk.{name}")
    sdk_log.parent = log
    sdk_log.addFilter(scrub)
    return sdk_log
