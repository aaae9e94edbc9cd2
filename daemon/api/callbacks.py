"""Vendor callbacks: Twilio's message status reports, verified by ``X-Twilio-Signature``.

Twilio signs the URL it was given as ``status_callback`` plus the form fields with the account's
auth token (https://www.twilio.com/docs/usage/security#validating-requests). The URL checked is the
configured one, not the request's, so a proxy in front of the daemon does not break signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from channels.twilio_callbacks import (
    SIGNATURE_HEADER,
    DeliveryOutcome,
    ForgedCallback,
    MalformedCallback,
    StatusCallback,
    verify_status_callback,
)
from daemon.api.errors import STORE_UNAVAILABLE, error_response, error_responses
from daemon.clock import Clock
from daemon.store.base import Store
from daemon.store.values import Callback


@dataclass(frozen=True)
class TwilioAccount:
    channel: str
    auth_token: str
    callback_url: str
    #: the numbers whose SMS reply "ACK <code>" is heard: every number the daemon texts, not only
    #: this channel's, since channels may share one Twilio account (and so one signature); empty:
    #: nobody (daemon.api.ack.with_repliers fills it from the configuration)
    repliers: frozenset[str] = frozenset()


def callback_router(store: Store, accounts: Callable[[], Sequence[TwilioAccount]], clock: Clock) -> APIRouter:
    router = APIRouter(tags=["callbacks"])

    @router.post(
        "/v1/callbacks/twilio",
        responses=error_responses(
            {
                400: "Not a status report",
                403: "Not signed by a configured Twilio account",
                413: "Body too large",
                503: STORE_UNAVAILABLE,
            }
        ),
    )
    async def twilio_status(request: Request) -> Response:
        """Twilio message status callback: delivered / undelivered / failed go into the delivery trail;
        an undelivered SMS fails its step and the plan moves on."""
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        signature = request.headers.get(SIGNATURE_HEADER)
        verified = _verify(accounts(), form, signature)
        if verified is None:
            return error_response(
                403, "forbidden", "the Twilio signature does not match any configured account"
            )
        if isinstance(verified, MalformedCallback):
            return error_response(400, "invalid_request", str(verified))
        channels, status = verified
        found = [
            await store.record_callback(
                Callback(channel, status.message_sid, _delivered(status), _detail(status), clock.now())
            )
            for channel in channels
        ]
        return JSONResponse({"recorded": any(found)})

    return router


def _verify(
    accounts: Sequence[TwilioAccount], form: dict[str, str], signature: str | None
) -> tuple[list[str], StatusCallback] | MalformedCallback | None:
    """The channels whose account signed the callback, and what it says.

    SMS channels of one Twilio account share its token and often its callback URL: the signature
    then verifies for each, and the message may be any one's (a MessageSid is unique to it)."""
    channels: list[str] = []
    status: StatusCallback | None = None
    for account in accounts:
        try:
            status = verify_status_callback(account.auth_token, account.callback_url, form, signature)
        except ForgedCallback:
            continue
        except MalformedCallback as exc:
            return exc
        channels.append(account.channel)
    return None if status is None else (channels, status)


def _delivered(status: StatusCallback) -> bool | None:
    if status.outcome == DeliveryOutcome.DELIVERED:
        return True
    if status.outcome == DeliveryOutcome.FAILED:
        return False
    return None


def _detail(status: StatusCallback) -> str:
    code = f" (error {status.error_code})" if status.error_code else ""
    return f"twilio: {status.status}{code}"
