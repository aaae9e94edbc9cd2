"""twilio requests made by SmsChannel, checked by Prism against Twilio's own OpenAPI spec."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from channels.base import OutboundMessage
from channels.sms import SmsChannel
from tests.contract.prism import prism_mock

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TOKEN = "contract-test-auth-token"
SENDER = "+14155550100"
RECIPIENT = "+14155552671"
SERVICE_SID = "MG" + "fedcba9876543210" * 2


@pytest.fixture(scope="module")
def twilio_prism() -> Iterator[str]:
    """Prism serving Twilio's API v2010 spec; yields its base URL."""
    with prism_mock("twilio_api_v2010.oas3.json") as url:
        yield url


def _message() -> OutboundMessage:
    return OutboundMessage(
        notification_id="ntf_contract",
        idempotency_key="ntf_contract",
        severity="critical",
        subject="Mail provider down",
        body="Probes failing — €5 of damage so far",
        created_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )


@pytest.fixture(params=["from_number", "messaging_service_sid"])
async def channel(request: pytest.FixtureRequest, twilio_prism: str) -> AsyncIterator[SmsChannel]:
    by_number = request.param == "from_number"
    sms = SmsChannel(
        "sms",
        account_sid=ACCOUNT_SID,
        auth_token=TOKEN,
        recipients=(RECIPIENT,),
        status_callback="https://backchannel.example/v1/callbacks/twilio",
        segments_per_s=100.0,
        base_url=twilio_prism,
        from_number=SENDER if by_number else None,
        messaging_service_sid=None if by_number else SERVICE_SID,
    )
    yield sms
    await sms.aclose()


async def test_message_create_is_accepted(channel: SmsChannel) -> None:
    """Messages create with a sender, text, ValidityPeriod and StatusCallback passes the spec."""
    receipt = await channel.send(_message())
    assert receipt.remote_id is not None
    assert receipt.remote_id.startswith("SM")


def test_message_create_without_to_is_rejected(twilio_prism: str) -> None:
    """A create call without its required To is refused by the spec."""
    client = Client(ACCOUNT_SID, TOKEN, environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""})
    client.api.base_url = twilio_prism
    with pytest.raises(TwilioRestException) as caught:
        # None is dropped from the form by twilio, so no To reaches the wire.
        client.messages.create(to=None, from_=SENDER, body="no recipient")
    assert 400 <= caught.value.status < 500
