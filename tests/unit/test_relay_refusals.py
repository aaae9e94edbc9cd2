"""What a relay's refusals become (pure): the report to the sender (RFC 3464), the follow-up."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from channels.base import FOUND_HERE, ChannelError, Receipt, Refusal
from channels.dsn import delivery_report, header_of, status_of
from daemon.core.model import Notification, Plan, Severity
from daemon.refusals import BOUNCE_OF_LABEL, RELAY_OF_LABEL, Bounces, consequences

ARRIVED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOW = ARRIVED + timedelta(minutes=5)
ORIGINAL = (
    "From: Jörg <app@example.com>\r\nTo: a@example.org, b@example.org\r\nSubject: Nightly job failed\r\n"
    "Message-ID: <job-1@app.example.com>\r\n\r\nTOP SECRET BODY\r\n"
).encode()
GONE = Refusal("gone@example.org", 550, "5.1.1 No such user")
BUSY = Refusal("busy@example.org", 452, "4.5.3 Too many recipients")
BOUNCES = Bounces(reporter="relay.example.com")


def _original(**changes: object) -> Notification:
    fields: dict[str, object] = {
        "id": "01ORIGINAL",
        "idempotency_key": "smtp:abc",
        "created_at": ARRIVED,
        "severity": Severity.HIGH,
        "subject": "Nightly job failed",
        "source": "smtp",
        "recipients": ("ok@example.org", "busy@example.org", "gone@example.org"),
        "labels": {"smtp_from": "app@example.com"},
        "mail_from": "app@example.com",
        "raw": ORIGINAL,
    }
    return Notification(**{**fields, **changes})  # type: ignore[arg-type]


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _raw_report(*failed: Refusal) -> bytes:
    return delivery_report(
        original=ORIGINAL,
        failed=failed,
        to="app@example.com",
        reporter="relay.example.com",
        from_address="MAILER-DAEMON@relay.example.com",
        arrived_at=ARRIVED,
        now=NOW,
        message_id="<r-1@backchannel>",
    )


def _report(*failed: Refusal) -> EmailMessage:
    return _parse(_raw_report(*failed))


def test_the_report_is_a_multipart_report_of_delivery_status() -> None:
    """RFC 6522: multipart/report (delivery-status) with text, delivery status and the header."""
    report = _report(GONE)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    types = [part.get_content_type() for part in report.iter_parts()]
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert report["To"] == "app@example.com"
    assert report["From"].addresses[0].addr_spec == "MAILER-DAEMON@relay.example.com"
    assert report["Auto-Submitted"] == "auto-replied"


def test_the_delivery_status_names_each_failed_recipient_and_its_reply() -> None:
    """Reporting-MTA and Arrival-Date once; per recipient Final-Recipient, Action, Status and
    Diagnostic-Code (RFC 3464 §2.2, §2.3)."""
    status = list(_report(GONE, BUSY).iter_parts())[1]
    per_message, *per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; relay.example.com"
    assert per_message["Arrival-Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    fields = [(b["Final-Recipient"], b["Action"], b["Status"], b["Diagnostic-Code"]) for b in per_recipient]
    assert fields == [
        ("rfc822; gone@example.org", "failed", "5.1.1", "smtp; 550 5.1.1 No such user"),
        ("rfc822; busy@example.org", "failed", "4.5.3", "smtp; 452 4.5.3 Too many recipients"),
    ]


def test_a_refusal_found_here_shows_no_server_reply() -> None:
    """No server replied (no SMTPUTF8 offered): the diagnostic type says so and no code is made up."""
    found = Refusal("jürgen@example.org", 554, "5.6.7 SMTPUTF8 is required", diagnostic=FOUND_HERE)
    status = list(_report(found).iter_parts())[1]
    _, block = status.get_payload()
    assert (block["Status"], block["Diagnostic-Code"]) == (
        "5.6.7",
        "x-backchannel; 5.6.7 SMTPUTF8 is required",
    )
    assert found.permanent


def test_the_text_names_each_recipient_and_reply() -> None:
    """The part a person reads says who did not get the message and why."""
    text, _, _ = (part.get_content() for part in _report(GONE).iter_parts())
    assert "<gone@example.org>: 550 5.1.1 No such user" in text
    assert "relay.example.com" in text


def test_the_original_header_is_attached_without_its_body() -> None:
    """text/rfc822-headers carries the header as received (8-bit bytes too), never the body."""
    raw = _raw_report(GONE)
    assert header_of(ORIGINAL) in raw
    assert b"TOP SECRET BODY" not in raw
    headers = list(_parse(raw).iter_parts())[2]
    assert "Message-ID: <job-1@app.example.com>" in headers.get_content()


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (Refusal("a@x", 550, "5.1.1 No such user"), "5.1.1"),
        (Refusal("a@x", 554, "Transaction failed"), "5.0.0"),
        (Refusal("a@x", 550, "4.2.2 inconsistent"), "5.0.0"),
        (Refusal("a@x", 452, "4.2.2 Mailbox full"), "4.2.2"),
        (Refusal("a@x", 451, "try later"), "4.4.7"),
    ],
)
def test_status_is_the_replys_enhanced_code_or_its_class_default(refusal: Refusal, status: str) -> None:
    """The reply's enhanced code when it has one of its class; else 5.0.0, or 4.4.7 given up on."""
    assert status_of(refusal) == status


def test_recipients_refused_for_now_get_a_follow_up_of_the_same_message() -> None:
    """Same bytes, same envelope sender, only those recipients, sent by the same channel."""
    receipt = Receipt("email", refused=(BUSY,))
    [item] = consequences("email", _original(), receipt, failed=False, bounces=BOUNCES, now=NOW)
    follow = item.notification
    assert (follow.raw, follow.mail_from, follow.recipients) == (
        ORIGINAL,
        "app@example.com",
        ("busy@example.org",),
    )
    assert follow.id != "01ORIGINAL"
    assert follow.created_at == ARRIVED
    assert follow.labels[RELAY_OF_LABEL] == "01ORIGINAL"
    assert item.plans["healthy"] == Plan(route="relay", mode="healthy", steps=("email",))
    assert item.plans["outage"].steps == ("email",)


def test_a_recipient_refused_for_good_gets_its_sender_a_report_from_the_null_sender() -> None:
    """A 5xx recipient: a report to the envelope sender, relayed with MAIL FROM:<>."""
    receipt = Receipt("email", refused=(GONE,))
    [item] = consequences("email", _original(), receipt, failed=False, bounces=BOUNCES, now=NOW)
    report = item.notification
    assert (report.recipients, report.mail_from, report.source) == (("app@example.com",), "", "bounce")
    assert report.labels[BOUNCE_OF_LABEL] == "01ORIGINAL"
    assert report.raw is not None
    assert _parse(report.raw).get_content_type() == "multipart/report"


def test_keys_are_one_per_original_and_recipients() -> None:
    """The same outcome twice makes the same keys (the store keeps one); order and case do not matter."""
    receipt = Receipt("email", refused=(BUSY, GONE))
    again = Receipt("email", refused=(Refusal("GONE@example.org", 550, "x"), BUSY))
    first = consequences("email", _original(), receipt, failed=False, bounces=BOUNCES, now=NOW)
    second = consequences("email", _original(), again, failed=False, bounces=BOUNCES, now=NOW)
    assert [i.notification.idempotency_key for i in first] == [i.notification.idempotency_key for i in second]
    other = consequences("email", _original(id="01OTHER"), receipt, failed=False, bounces=BOUNCES, now=NOW)
    assert {i.notification.idempotency_key for i in other}.isdisjoint(
        i.notification.idempotency_key for i in first
    )


def test_a_failed_message_reports_every_recipient_refused() -> None:
    """Refused at DATA (or MAIL) for good: one report naming all of them."""
    error = ChannelError("refused", permanent=True, refused=(GONE, Refusal("ok@example.org", 550, "5.1.1 x")))
    [item] = consequences("email", _original(), error, failed=True, bounces=BOUNCES, now=NOW)
    assert item.notification.labels[BOUNCE_OF_LABEL] == "01ORIGINAL"
    assert item.notification.raw is not None
    assert b"ok@example.org" in item.notification.raw


def test_a_message_failed_with_some_refused_for_now_follows_them_up_and_reports_the_rest() -> None:
    """Every recipient refused, some for good: the report names those, a follow-up takes the others."""
    error = ChannelError("refused", permanent=True, refused=(GONE, BUSY))
    follow, sent = consequences("email", _original(), error, failed=True, bounces=BOUNCES, now=NOW)
    assert follow.notification.recipients == (BUSY.recipient,)
    assert follow.notification.labels[RELAY_OF_LABEL] == "01ORIGINAL"
    assert sent.notification.labels[BOUNCE_OF_LABEL] == "01ORIGINAL"
    assert sent.notification.raw is not None
    assert GONE.recipient.encode() in sent.notification.raw
    assert BUSY.recipient.encode() not in sent.notification.raw


def test_retries_run_out_report_those_refused_for_now_too() -> None:
    """A message retried until its attempts ran out: every recipient is reported, none followed up."""
    error = ChannelError("busy", refused=(GONE, BUSY))
    [sent] = consequences("email", _original(), error, failed=True, bounces=BOUNCES, now=NOW)
    assert sent.notification.raw is not None
    assert BUSY.recipient.encode() in sent.notification.raw


def test_a_send_to_be_retried_reports_nothing_yet() -> None:
    """Refused for now, to be retried: the sender is told nothing, no follow-up either."""
    error = ChannelError("busy", refused=(BUSY,))
    assert consequences("email", _original(), error, failed=False, bounces=BOUNCES, now=NOW) == []


def test_the_null_sender_never_gets_a_report() -> None:
    """RFC 5321 §6.1: no report to <> (a report of a report would loop); a follow-up still goes."""
    receipt = Receipt("email", refused=(GONE, BUSY))
    items = consequences("email", _original(mail_from=""), receipt, failed=False, bounces=BOUNCES, now=NOW)
    assert [i.notification.labels.get(RELAY_OF_LABEL) for i in items] == ["01ORIGINAL"]
    error = ChannelError("refused", permanent=True, refused=(GONE,))
    assert consequences("email", _original(mail_from=""), error, failed=True, bounces=BOUNCES, now=NOW) == []


def test_bounces_turned_off_report_nothing() -> None:
    """``bounces: false``: refused recipients are not reported (the follow-up is not a report)."""
    off = Bounces(enabled=False)
    receipt = Receipt("email", refused=(GONE,))
    assert consequences("email", _original(), receipt, failed=False, bounces=off, now=NOW) == []


def test_a_notification_not_relayed_follows_up_but_reports_nothing() -> None:
    """A notification of ours has no sender to report to; those refused for now still get it later."""
    receipt = Receipt("email", refused=(GONE, BUSY))
    ours = _original(raw=None, mail_from=None, source="api")
    [item] = consequences("email", ours, receipt, failed=False, bounces=BOUNCES, now=NOW)
    assert item.notification.recipients == ("busy@example.org",)
    assert item.notification.raw is None and item.notification.mail_from is None
    assert item.notification.labels[RELAY_OF_LABEL] == ours.id


def test_the_reports_from_is_mailer_daemon_at_the_host_unless_configured() -> None:
    """MAILER-DAEMON@<reporter> by default; a configured address replaces it."""
    assert Bounces(reporter="relay.example.com").sender == "MAILER-DAEMON@relay.example.com"
    assert Bounces(reporter="r", from_address="postmaster@example.com").sender == "postmaster@example.com"
