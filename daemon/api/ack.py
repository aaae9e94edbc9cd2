"""Acknowledging a notification: the API (and so the CLI), a Slack button, an SMS reply.

All three end in :meth:`Store.acknowledge`, which stops the escalation and records who and how
in the delivery trail. The API needs the ``admin`` scope: acknowledging silences the people still
to be paged, and ``send`` tokens sit in every script and monitoring system that submits alerts;
none of those should be able to stop an escalation. Slack and Twilio prove who they are with their
request signatures instead of a token (see :mod:`channels.slack_interactions` and
:mod:`channels.twilio_callbacks`).

A signature proves only that Twilio relayed the SMS, not who wrote it: anyone can text our number.
So an SMS is heard only from a number the daemon texts (an SMS channel's ``recipients``, a directory
person's ``phone``); any other sender gets an empty answer whatever the code, and a log line. A
Slack click is not checked against the directory: the button exists only in messages our app
posted, Slack vouches for the clicking member of the workspace and names them in the trail, and a
directory ``slack`` may be an email address that only a Slack API call would turn into an id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StringConstraints
from starlette.datastructures import Headers

from channels import slack_interactions as slack
from channels.twilio_callbacks import (
    SIGNATURE_HEADER,
    TWIML_SILENCE,
    CallbackError,
    ForgedCallback,
    InboundMessage,
    ack_code_in,
    twiml_reply,
    verify_inbound,
)
from daemon.api.callbacks import TwilioAccount
from daemon.api.errors import BEARER, STORE_UNAVAILABLE, error_response, error_responses, token_errors
from daemon.api.models import Acknowledged
from daemon.clock import Clock
from daemon.config_channels import SlackChannelConfig, SmsChannelConfig
from daemon.store.base import Store
from daemon.store.values import AckResult

if TYPE_CHECKING:
    from daemon.config import Config

log = logging.getLogger(__name__)

#: Twilio's messaging webhook for our number: the status callback URL with this appended
INBOUND_SUFFIX = "/inbound"
#: (notification id, by, via) of an acknowledgement just committed
OnAcknowledged = Callable[[str, str, str], None]
#: acknowledges (notification id, by, via) now and tells ``OnAcknowledged`` once committed
Acknowledge = Callable[[str, str, str], Awaitable[AckResult]]


@dataclass(frozen=True)
class SlackApp:
    """A Slack channel whose app sends interactions (the Acknowledge button) signed with this secret."""

    channel: str
    signing_secret: str


def slack_apps(config: Config) -> list[SlackApp]:
    """The Slack channels configured with a signing secret (composition root: ApiContext.slack_apps)."""
    return [
        SlackApp(name, c.signing_secret.get_secret_value())
        for name, c in config.channels.items()
        if isinstance(c, SlackChannelConfig) and c.signing_secret is not None
    ]


def texted_numbers(config: Config) -> frozenset[str]:
    """The numbers this daemon texts: the SMS channels' ``recipients`` and the directory's phones."""
    sms = (n for c in config.channels.values() if isinstance(c, SmsChannelConfig) for n in c.recipients)
    people = (p.phone for p in config.directory.people.values() if p.phone is not None)
    return frozenset((*sms, *people))


def with_repliers(accounts: Sequence[TwilioAccount], config: Config) -> list[TwilioAccount]:
    """``accounts`` hearing SMS replies from the numbers the daemon texts (composition root, reload)."""
    numbers = texted_numbers(config)
    return [replace(account, repliers=numbers) for account in accounts]


class AckIn(BaseModel):
    """Who acknowledges; without a body, the API token's name is recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


def ack_router(
    store: Store,
    admin: Callable[[Request], Awaitable[str]],
    clock: Clock,
    slack_apps: Callable[[], Sequence[SlackApp]],
    twilio_accounts: Callable[[], Sequence[TwilioAccount]],
    on_acknowledged: OnAcknowledged = lambda *_: None,
) -> APIRouter:
    """``on_acknowledged(notification_id, by, via)`` runs after each acknowledgement is committed."""
    router = APIRouter()
    acknowledge_as = _acknowledger(store, clock, on_acknowledged)
    _add_api_ack(router, acknowledge_as, admin)
    _add_slack_click(router, acknowledge_as, slack_apps, clock)
    _add_sms_reply(router, store, acknowledge_as, twilio_accounts)
    return router


def _acknowledger(store: Store, clock: Clock, on_acknowledged: OnAcknowledged) -> Acknowledge:
    async def acknowledge_as(notification_id: str, by: str, via: str) -> AckResult:
        result = await store.acknowledge(notification_id, by, via, clock.now())
        if result == "acknowledged":
            on_acknowledged(notification_id, by, via)
        return result

    return acknowledge_as


def _add_api_ack(
    router: APIRouter, acknowledge_as: Acknowledge, admin: Callable[[Request], Awaitable[str]]
) -> None:
    @router.post(
        "/v1/notifications/{notification_id}/ack",
        tags=["notifications"],
        response_model=Acknowledged,
        responses=token_errors(
            "admin",
            {
                404: "No such notification",
                409: "Finished: nothing left to acknowledge",
                413: "Body too large",
                422: "Invalid body",
            },
        ),
        openapi_extra=BEARER,
    )
    async def acknowledge(
        notification_id: str, token: str = Depends(admin), body: AckIn | None = None
    ) -> dict[str, Any]:
        """Stop the notification's escalation: steps not yet sent are not sent. 409 if nothing is left."""
        by = body.by if body is not None and body.by else f"token {token}"
        result = await acknowledge_as(notification_id, by, "api")
        if result == "not_found":
            raise HTTPException(404, f"no notification {notification_id}")
        if result == "finished":
            raise HTTPException(409, f"{notification_id} is finished: nothing left to acknowledge")
        return {"id": notification_id, "result": result}


def _add_slack_click(
    router: APIRouter, acknowledge_as: Acknowledge, slack_apps: Callable[[], Sequence[SlackApp]], clock: Clock
) -> None:
    @router.post(
        "/v1/callbacks/slack",
        tags=["callbacks"],
        responses=error_responses(
            {
                400: "No JSON payload",
                401: "Not signed by a configured Slack app",
                413: "Body too large",
                503: STORE_UNAVAILABLE,
            }
        ),
    )
    async def slack_interaction(request: Request) -> Response:
        """Slack's interactivity request URL: a click on Acknowledge, verified by ``X-Slack-Signature``."""
        raw = await request.body()
        try:
            click = _verified_click(slack_apps(), request.headers, raw, clock.now())
        except slack.ForgedInteraction as exc:
            return error_response(401, "unauthorized", f"not signed by a configured Slack app: {exc}")
        except slack.MalformedInteraction as exc:
            return error_response(400, "invalid_request", str(exc))
        if click is None:
            return JSONResponse({"result": "ignored"})
        result = await acknowledge_as(click.notification_id, click.user, "slack")
        return JSONResponse({"result": result})


def _verified_click(
    apps: Sequence[SlackApp], headers: Headers, raw: bytes, now: datetime
) -> slack.AckClick | None:
    """The Acknowledge click in ``raw`` (None for another interaction) once its signature checks out."""
    secrets = [app.signing_secret for app in apps]
    slack.verify(
        secrets,
        headers.get(slack.TIMESTAMP_HEADER),
        raw,
        headers.get(slack.SIGNATURE_HEADER),
        now.timestamp(),
    )
    return slack.parse_ack(raw)


def _add_sms_reply(
    router: APIRouter,
    store: Store,
    acknowledge_as: Acknowledge,
    twilio_accounts: Callable[[], Sequence[TwilioAccount]],
) -> None:
    @router.post(
        "/v1/callbacks/twilio" + INBOUND_SUFFIX,
        tags=["callbacks"],
        response_class=Response,
        responses=_TWIML_RESPONSES,
    )
    async def twilio_inbound(request: Request) -> Response:
        """Twilio's messaging webhook: a reply ``ACK <code>`` acknowledges; answered with TwiML."""
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        try:
            account, message = _verify_inbound(twilio_accounts(), form, request.headers.get(SIGNATURE_HEADER))
        except ForgedCallback:
            return error_response(
                403, "forbidden", "the Twilio signature does not match any configured account"
            )
        except CallbackError as exc:
            return error_response(400, "invalid_request", str(exc))
        if message.sender not in account.repliers:
            _stranger(account, message)
            return Response(TWIML_SILENCE, media_type="application/xml")
        answer = await _sms_ack(store, acknowledge_as, message)
        return Response(twiml_reply(answer), media_type="application/xml")


_TWIML_RESPONSES: dict[int | str, dict[str, Any]] = {
    "200": {
        "description": "TwiML: a one-line reply to the sender, or none",
        "content": {"application/xml": {"schema": {"type": "string"}}},
    },
    **error_responses(
        {
            400: "Not a message (no From)",
            403: "Not signed by a configured Twilio account",
            413: "Body too large",
            503: STORE_UNAVAILABLE,
        }
    ),
}


def _verify_inbound(
    accounts: Sequence[TwilioAccount], form: dict[str, str], signature: str | None
) -> tuple[TwilioAccount, InboundMessage]:
    for account in accounts:
        try:
            url = inbound_url(account.callback_url)
            return account, verify_inbound(account.auth_token, url, form, signature)
        except ForgedCallback:
            continue
    raise ForgedCallback()


def _stranger(account: TwilioAccount, message: InboundMessage) -> None:
    # the body is left out: it may hold a valid code, and the log is read more widely than the trail
    log.warning(
        "SMS to %s from %s, a number this daemon does not text: ignored",
        account.channel,
        message.sender,
        extra={"event": "ack.sms_unknown_sender", "channel": account.channel, "sender": message.sender},
    )


def inbound_url(status_callback: str) -> str:
    """The messaging webhook URL Twilio signs: the status callback's path plus ``/inbound``."""
    parts = urlsplit(status_callback)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + INBOUND_SUFFIX))


async def _sms_ack(store: Store, acknowledge: Acknowledge, message: InboundMessage) -> str:
    """The answer to an SMS: what happened, in a line that fits one segment."""
    code = ack_code_in(message.body)
    if code is None:
        return "To acknowledge, reply ACK and the 6-character code from the alert."
    notification_id = await store.by_ack_code(code)
    if notification_id is None:
        return f"No open alert with code {code.upper()}."
    result = await acknowledge(notification_id, message.sender, "sms")
    if result == "finished":
        return f"Alert {code.upper()} is already finished."
    return f"Acknowledged {code.upper()}: escalation stopped."
