"""The SMS channel: one Twilio Messages API request per recipient, paced per sender.

Twilio's sync client runs in the channel's own threads (:class:`~channels.threads.SdkThreads`),
each request within a deadline a second past ``timeout_s``. Its async client is aiohttp plus
aiohttp-retry, a second HTTP stack with a retry layer of its own; the sync one is requests, which
twilio depends on anyway and which retries nothing unless given ``max_retries``. SMS volume is a
few segments per second, so the channel's four threads carry it.

Texts read ``[SEVERITY] subject - body [notification-id]``, shortened to ``max_segments``
(see :mod:`channels.gsm`) with the id always kept; a digest (:mod:`channels.digests`) goes as
built. The separator is an em dash only when the text sent is UCS-2 anyway: in GSM-7 it would
turn the whole text into UCS-2 and halve its room. Both it and the ellipsis are chosen by the text
as shortened, not as given: a cut-off emoji does not keep the rest in UCS-2.

Pacing: Twilio queues what a sender cannot send at once and releases it at the sender's rate
(long code 1, toll-free 3, short code 100 segments per second, see
https://help.twilio.com/articles/115002943027-Understanding-Twilio-Rate-Limits-and-Message-Queues);
``validity_period`` drops what waits longer, so an alert is not delivered hours late. Pacing
here, in segments per second per sender, keeps that queue empty. A Messaging Service SID is
paced as one sender (conservative).

Outcomes, mapped once in :func:`vendor_error` (https://www.twilio.com/docs/api/errors):

==============================================================  =========  =============
Twilio answer                                                   permanent  service_fault
==============================================================  =========  =============
201                                                             delivered
21211 bad To, 21610 opted out, 21614 not mobile, 21408 region,  yes        no
21606 From not usable, any other 4xx
401/403 (bad credentials)                                       yes        yes
20429 / HTTP 429 (Retry-After honoured), 30001 / 21611 queue   no         no
overflow, 63017 account rate limit
5xx (Retry-After honoured), timeout, refused, reset             no         yes
==============================================================  =========  =============

With several recipients: delivered once each is texted or failed for good (the receipt names the
failed; a number that is no phone number fails alone); one failed for now makes the send a retry
(``ChannelError.remote_id`` holds what went) that texts only those not yet texted; none sent is
permanent only if every failure is permanent. ``Receipt.remote_id`` is the MessageSid (comma
separated for several), which status callbacks (:mod:`channels.twilio_callbacks`) refer to.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from channels.base import ChannelConfigError, ChannelError, OutboundMessage, Receipt
from channels.digests import is_digest, sms_text
from channels.gsm import encoding_for, segment_count, shorten
from channels.pacing import Pacer
from channels.sends import Sends
from channels.threads import CallTimedOut, SdkThreads
from channels.webhook import retry_after_s

PACE_LONG_CODE_PER_S = 1.0
PACE_TOLL_FREE_PER_S = 3.0
PACE_SHORT_CODE_PER_S = 100.0

PERMANENT_CODES = frozenset({21211, 21610, 21614, 21408, 21606})
#: 21611: the From number's queue holds ten hours already (https://www.twilio.com/docs/api/errors/21611);
#: 63017: the account's combined rate limit
TRANSIENT_CODES = frozenset({20429, 21611, 30001, 63017})

_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
#: A short code, or an alphanumeric sender ID (up to 11 characters, at least one letter).
_NON_E164_SENDER = re.compile(r"\d{5,6}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
#: Stops twilio.rest.Client reading TWILIO_EDGE/TWILIO_REGION from os.environ (an empty mapping
#: would make it fall back to os.environ): only the config module reads the environment.
_NO_ENVIRONMENT = {"TWILIO_EDGE": "", "TWILIO_REGION": ""}


def validate_e164(number: str) -> str:
    """``number`` in E.164 (``+`` and digits) if it is a valid phone number, else ValueError."""
    if not number.startswith("+"):
        raise ValueError(f"{number!r} is not in E.164 format (+ and country code)")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{number!r} is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{number!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def render_text(message: OutboundMessage, max_segments: int) -> str:
    """The SMS text for ``message``, at most ``max_segments`` long, ending in `` [notification-id]``
    (and ``Reply ACK <code>`` while an escalation waits for an acknowledgement).

    A digest is sent as built (it names its id in its headline and was fitted to its own budget).
    """
    if is_digest(message):
        return shorten(sms_text(message.subject, message.body), max_segments)
    head = f"[{message.severity.upper()}] {_squash(message.subject)}"
    if message.drill:
        head = f"[DRILL] {head}"
    body = _squash(message.body)
    suffix = f" [{message.notification_id}]"
    if message.acknowledgeable and message.ack_code:
        # The reply Twilio's inbound webhook turns into an acknowledgement (docs/policies.md).
        suffix = f"{suffix} Reply ACK {message.ack_code}"
    if not body:
        return shorten(head, max_segments, suffix=suffix)
    # Chosen by what is sent, not by the whole text: when shortening cut away the only character
    # outside GSM-7, an em dash would have kept the text in UCS-2 (a third of its room).
    text = shorten(f"{head} - {body}", max_segments, suffix=suffix)
    if encoding_for(text) == "UCS-2":  # UCS-2 anyway: the em dash costs what the hyphen does
        text = shorten(f"{head} \u2014 {body}", max_segments, suffix=suffix)
    return text


def _squash(text: str) -> str:
    """Whitespace runs (newlines included) become one space: an SMS has no room for layout."""
    return " ".join(text.split())


def vendor_error(
    channel: str, status: int, code: int | None, text: str, headers: Mapping[str, str] | None
) -> ChannelError:
    """The ChannelError for a Twilio error answer (see the table in the module docstring)."""
    reason = f"{channel}: Twilio HTTP {status}, error {code}: {text}"
    retry_after = retry_after_s((headers or {}).get("Retry-After"), time.time())
    if code in PERMANENT_CODES:
        return ChannelError(reason, permanent=True)
    if code in TRANSIENT_CODES or status == 429:
        return ChannelError(reason, retry_after_s=retry_after)
    if status >= 500:
        return ChannelError(reason, retry_after_s=retry_after, service_fault=True)
    return ChannelError(reason, permanent=True, service_fault=status in (401, 403))


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """requests underneath, no retries, a fixed timeout, an optional base URL (a stand-in, Prism).

    TwilioRestException drops the response headers, so the last response's headers are kept per
    thread: the thread that sent the request reads its Retry-After after catching the error.
    """

    def __init__(self, base_url: str | None, timeout_s: float) -> None:
        super().__init__(pool_connections=True, timeout=timeout_s)
        self._base = urlsplit(base_url.rstrip("/")) if base_url else None
        self.last = threading.local()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self._base is not None:
            url = urlsplit(url)._replace(scheme=self._base.scheme, netloc=self._base.netloc).geturl()
        self.last.headers = None
        response = super().request(method, url, *args, **kwargs)
        self.last.headers = response.headers
        return response

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


class SmsChannel:
    """Sends each notification as one SMS per recipient through Twilio's Messages API."""

    def __init__(
        self,
        name: str,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        recipients: tuple[str, ...] = (),
        max_segments: int = 3,
        segments_per_s: float = PACE_LONG_CODE_PER_S,
        validity_period_s: int = 600,
        status_callback: str | None = None,
        timeout_s: float = 10.0,
        base_url: str | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.name = name
        self._sender = _sender(name, from_number, messaging_service_sid)
        _check_settings(name, account_sid, max_segments, validity_period_s, timeout_s)
        if segments_per_s <= 0:
            raise ChannelConfigError(f"{name}: segments_per_s must be positive, got {segments_per_s}")
        self._recipients = tuple(_configured_number(name, number) for number in recipients)
        self._max_segments = max_segments
        #: (idempotency key, number) texted: a retry does not text them again
        self._sent: Sends[tuple[str, str]] = Sends()
        self._pacer = pacer or Pacer(segments_per_s)
        self._http = _HttpClient(base_url, timeout_s)
        self._threads = SdkThreads(name, timeout_s)
        self._client = Client(account_sid, auth_token, http_client=self._http, environment=_NO_ENVIRONMENT)
        self._params: dict[str, Any] = {"validity_period": validity_period_s}
        if from_number is not None:
            self._params["from_"] = self._sender
        else:
            self._params["messaging_service_sid"] = self._sender
        if status_callback is not None:
            self._params["status_callback"] = status_callback

    async def send(self, message: OutboundMessage) -> Receipt:
        text = render_text(message, self._max_segments)
        numbers, failures = self._numbers(message)
        total, cost = len(numbers) + len(failures), float(segment_count(text))
        sids: list[str] = []
        for number in numbers:
            key = (message.idempotency_key, number)
            # Texted by an earlier attempt (a retry after another recipient failed for now): not again.
            if (sid := self._sent.get(key)) is None:
                await self._pacer.acquire(self._sender, cost)
                try:
                    sid = await self._threads.run(self._create, number, text)
                except CallTimedOut as exc:
                    reason = f"{self.name}: Twilio did not answer: {exc}"
                    failures.append((number, ChannelError(reason, service_fault=True)))
                    continue
                except ChannelError as exc:
                    failures.append((number, exc))
                    continue
                self._sent.remember(key, sid)
            sids.append(sid)
        return self._receipt(total, sids, failures)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._http.close)
        self._threads.close()

    def _numbers(self, message: OutboundMessage) -> tuple[list[str], list[tuple[str, ChannelError]]]:
        """The message's phone numbers if it names any (its e-mail addresses are not ours), else ours;
        and those it names that are no phone number, each failed for itself: one mistyped number
        (a directory's) must not keep the text from the others."""
        numbers: list[str] = []
        invalid: list[tuple[str, ChannelError]] = []
        for number in (r for r in message.recipients if r.startswith("+")):
            try:
                numbers.append(validate_e164(number))
            except ValueError as exc:
                invalid.append((number, ChannelError(f"{self.name}: {exc}", permanent=True)))
        if not (numbers or invalid or self._recipients):
            raise ChannelError(f"{self.name}: no phone numbers to send to", permanent=True)
        return (numbers if numbers or invalid else list(self._recipients)), invalid

    def _create(self, number: str, text: str) -> str:
        """One Messages API request, in a worker thread; the MessageSid, or ChannelError."""
        try:
            created = self._client.messages.create(to=number, body=text, **self._params)
        except TwilioRestException as exc:
            raise self._vendor_error(exc.status, exc.code, exc.msg) from exc
        except TwilioServiceException as exc:
            raise self._vendor_error(exc.status, exc.code, exc.detail or exc.title) from exc
        except OSError as exc:
            # requests' ConnectionError and Timeout derive from IOError (OSError).
            reason = f"{self.name}: Twilio unreachable: {type(exc).__name__}: {exc}"
            raise ChannelError(reason, service_fault=True) from exc
        return str(created.sid)

    def _vendor_error(self, status: int, code: int | None, text: str) -> ChannelError:
        headers: Mapping[str, str] | None = getattr(self._http.last, "headers", None)
        return vendor_error(self.name, status, code, text, headers)

    def _receipt(self, total: int, sids: list[str], failures: list[tuple[str, ChannelError]]) -> Receipt:
        """Delivered once every recipient is texted or failed for good; a recipient failed for now
        (429, 5xx) is retried later, by the dispatcher, and those already texted are not again."""
        failed = "; ".join(f"{number}: {exc}" for number, exc in failures)
        errors = [exc for _, exc in failures]
        if sids and all(e.permanent for e in errors):
            detail = f"sent to {len(sids)} of {total}" + (f"; failed {failed}" if failures else "")
            return Receipt(self.name, detail, remote_id=",".join(sids))
        if len(failures) == 1 and not sids:
            raise failures[0][1]
        retry_after = max((e.retry_after_s for e in errors if e.retry_after_s is not None), default=None)
        sent = f"sent to {len(sids)} of {total}; failed" if sids else "no SMS sent:"
        raise ChannelError(
            f"{self.name}: {sent} {failed}",
            permanent=all(e.permanent for e in errors),
            retry_after_s=retry_after,
            service_fault=any(e.service_fault for e in errors),
            remote_id=",".join(sids) or None,
        ) from errors[0]


def _sender(channel: str, from_number: str | None, messaging_service_sid: str | None) -> str:
    if from_number is not None and messaging_service_sid is None:
        if _NON_E164_SENDER.fullmatch(from_number):
            return from_number
        return _configured_number(channel, from_number)
    if messaging_service_sid is not None and from_number is None:
        if not _SERVICE_SID.fullmatch(messaging_service_sid):
            raise ChannelConfigError(f"{channel}: messaging_service_sid must be MG and 32 hex digits")
        return messaging_service_sid
    raise ChannelConfigError(f"{channel}: set exactly one of from_number and messaging_service_sid")


def _configured_number(channel: str, number: str) -> str:
    try:
        return validate_e164(number)
    except ValueError as exc:
        raise ChannelConfigError(f"{channel}: {exc}") from exc


def _check_settings(
    channel: str, account_sid: str, max_segments: int, validity_period_s: int, timeout_s: float
) -> None:
    if not _ACCOUNT_SID.fullmatch(account_sid):
        raise ChannelConfigError(f"{channel}: account_sid must be AC and 32 hex digits")
    # Twilio accepts at most 1600 characters, 10 segments of GSM-7.
    if not 1 <= max_segments <= 10:
        raise ChannelConfigError(f"{channel}: max_segments must be 1 to 10, got {max_segments}")
    # https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
    if not 1 <= validity_period_s <= 36000:
        raise ChannelConfigError(f"{channel}: validity_period_s must be 1 to 36000, got {validity_period_s}")
    if timeout_s <= 0:
        raise ChannelConfigError(f"{channel}: timeout_s must be positive, got {timeout_s}")
