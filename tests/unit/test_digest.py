"""The pure digest core: when a send slot carries a digest, and what a digest says within its limit."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from channels.base import OutboundMessage
from channels.digests import DIGEST_LABEL, sms_text
from channels.gsm import segment_count
from channels.sms import render_text
from daemon.core.digest import SLACK_LAYOUT, SMS_LAYOUT, Item, Pending, build, next_send
from daemon.core.model import Delivery, DeliveryState, Mode, Notification, ProviderState, Severity
from daemon.digesting import Broken, Digesting, DigestPolicy, DigestSend, slack_fits, sms_fits
from daemon.rendering import Renderer
from daemon.store.values import Claimed

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
LINK = "https://status.example.com/v1/notifications?since={since}"
LEASE = T0 + timedelta(minutes=5)


def item(n: int, severity: Severity = Severity.CRITICAL, key: str | None = None, subject: str = "") -> Item:
    return Item(key or f"k{n}", severity, subject or f"alert {n}", T0 + timedelta(seconds=n))


def pending(*severities: Severity, cost: float = 1.0, destination: str = "ops") -> list[Pending]:
    return [Pending(s, cost, destination) for s in severities]


def test_nothing_pending_sends_nothing() -> None:
    """An empty slot carries nothing."""
    assert next_send([], pace_per_s=1, drain_target_s=30, bursting=False) is None


def test_backlog_within_target_goes_one_by_one() -> None:
    """30 deliveries at 1/s drain in 30 s: the oldest goes on its own."""
    choice = next_send(pending(*[Severity.INFO] * 30), pace_per_s=1, drain_target_s=30, bursting=False)
    assert choice is not None and (choice.kind, choice.indexes, choice.bursting) == ("single", (0,), False)


def test_burst_opens_with_the_first_critical_alone() -> None:
    """Past the target, the oldest critical one goes on its own first and a burst begins."""
    severities = [Severity.WARNING, Severity.CRITICAL, Severity.CRITICAL] * 11
    choice = next_send(pending(*severities), pace_per_s=1, drain_target_s=30, bursting=False)
    assert choice is not None and (choice.kind, choice.indexes, choice.bursting) == ("single", (1,), True)


def test_burst_without_critical_starts_with_a_digest() -> None:
    """Past the target with nothing critical, the first slot already carries a digest."""
    choice = next_send(pending(*[Severity.WARNING] * 31), pace_per_s=1, drain_target_s=30, bursting=False)
    assert choice is not None and choice.kind == "digest" and len(choice.indexes) == 31


def test_during_a_burst_each_slot_carries_one_digest_per_destination() -> None:
    """While bursting, a slot digests everything waiting for the oldest delivery's destination."""
    waiting = [*pending(Severity.HIGH, destination="a"), *pending(Severity.CRITICAL, destination="b")] * 3
    choice = next_send(waiting, pace_per_s=1, drain_target_s=30, bursting=True)
    assert choice is not None and (choice.kind, choice.indexes) == ("digest", (0, 2, 4))


def test_burst_ends_when_one_is_left() -> None:
    """A slot that finds a single delivery sends it alone and ends the burst."""
    choice = next_send(pending(Severity.CRITICAL), pace_per_s=1, drain_target_s=30, bursting=True)
    assert choice is not None and (choice.kind, choice.bursting) == ("single", False)


def test_costs_count_towards_the_drain_time() -> None:
    """Ten 3-segment SMS at 1 segment/s take 30 s: past a 20 s target."""
    choice = next_send(
        pending(*[Severity.INFO] * 10, cost=3), pace_per_s=1, drain_target_s=20, bursting=False
    )
    assert choice is not None and choice.kind == "digest"


def test_digest_counts_by_severity_and_lists_most_important_first() -> None:
    """Counts per severity; critical before high, older before newer; the rest summarised."""
    items = [item(0, Severity.HIGH), item(1, Severity.CRITICAL), item(2, Severity.CRITICAL), item(3)]
    digest = build("D1", items, fits=slack_fits, layout=SLACK_LAYOUT, top=2, link=LINK)
    assert digest.headline == "Digest D1: 4 notifications (3 critical, 1 high)"
    assert digest.body.splitlines() == [
        "• critical: alert 1",
        "• critical: alert 2",
        "+2 more: https://status.example.com/v1/notifications?since=2026-11-27T10:00:00Z",
    ]
    assert (digest.total, digest.severity, digest.listed) == (4, Severity.CRITICAL, 2)


def test_duplicates_collapse_into_one_line() -> None:
    """Three notifications with one key are one line marked x3, and still count as three."""
    items = [item(n, key="fp") for n in range(3)] + [item(9, Severity.INFO)]
    digest = build("D2", items, fits=slack_fits, layout=SLACK_LAYOUT, top=5, link=None)
    assert digest.body.splitlines() == ["• critical: alert 0 x3", "• info: alert 9"]
    assert digest.counts == {Severity.CRITICAL: 3, Severity.INFO: 1}


def test_sms_digest_drops_subjects_before_the_link() -> None:
    """Long subjects give way first; the counts and the link stay."""
    items = [item(n, subject="x" * 40 + f" {n}") for n in range(20)]
    digest = build("D3", items, fits=sms_fits(1), layout=SMS_LAYOUT, top=5, link=LINK)
    text = sms_text(digest.headline, digest.body)
    assert segment_count(text) == 1
    assert text.startswith("Digest D3: 20 alerts (20 crit). ")
    assert text.endswith("more: https://status.example.com/v1/notifications?since=2026-11-27T10:00:00Z")


def test_link_goes_when_nothing_else_fits() -> None:
    """A budget too small for the link keeps the total and drops the link."""
    long_link = "https://status.example.com/" + "a" * 150 + "?since={since}"
    digest = build("D4", [item(1)], fits=sms_fits(1), layout=SMS_LAYOUT, top=5, link=long_link)
    assert "https://" not in digest.body
    assert digest.total == 1


_subjects = st.text(min_size=0, max_size=200)
_items = st.lists(
    st.builds(
        Item,
        key=st.sampled_from(["a", "b", "c", "d"]) | st.text(min_size=1, max_size=8),
        severity=st.sampled_from(list(Severity)),
        subject=_subjects,
        created_at=st.datetimes(
            min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
        ),
    ),
    min_size=1,
    max_size=60,
)


@given(_items, st.integers(1, 3), st.integers(0, 10), st.booleans())
def test_sms_digest_always_fits_its_segments_and_adds_up(
    items: list[Item], segments: int, top: int, with_link: bool
) -> None:
    """Whatever the subjects (emoji, GSM extension characters), the SMS fits and the counts add up."""
    digest = build(
        "DXXXXXXXX",
        items,
        fits=sms_fits(segments),
        layout=SMS_LAYOUT,
        top=top,
        link=LINK if with_link else None,
    )
    assert segment_count(sms_text(digest.headline, digest.body)) <= segments
    assert digest.total == len(items) == sum(digest.counts.values())
    assert digest.listed <= top


@given(_items, st.integers(0, 50))
def test_slack_digest_always_fits_and_adds_up(items: list[Item], top: int) -> None:
    """Whatever the subjects, the Slack digest is within Block Kit limits and the counts add up."""
    digest = build("DXXXXXXXX", items, fits=slack_fits, layout=SLACK_LAYOUT, top=top, link=LINK)
    assert slack_fits(digest.headline, digest.body)
    assert digest.total == len(items) == sum(digest.counts.values())
    assert str(digest.total) in digest.headline


def test_sms_sends_a_digest_as_built() -> None:
    """The SMS channel adds no severity prefix or id suffix to a digest: it was fitted already."""
    message = OutboundMessage(
        "D1", "D1", "critical", "Digest D1: 2 alerts (2 crit)", "a; b", T0, labels={DIGEST_LABEL: "D1"}
    )
    assert render_text(message, 1) == "Digest D1: 2 alerts (2 crit). a; b"


def test_an_escalation_step_is_never_carried_in_a_digest() -> None:
    """During a burst an acknowledgeable delivery goes on its own before the next digest."""
    waiting = [*pending(Severity.INFO, Severity.INFO), Pending(Severity.HIGH, 1.0, "ops", alone=True)]
    choice = next_send(waiting, pace_per_s=1, drain_target_s=1, bursting=True)
    assert choice is not None and (choice.kind, choice.indexes) == ("single", (2,))
    rest = next_send(waiting[:2], pace_per_s=1, drain_target_s=1, bursting=True)
    assert rest is not None and (rest.kind, rest.indexes) == ("digest", (0, 1))


def test_a_burst_still_opens_with_the_first_critical_before_escalations() -> None:
    """Opening a burst, the oldest critical goes first; a waiting escalation step takes the next slot."""
    waiting = [Pending(Severity.HIGH, 1.0, "ops", alone=True), *pending(Severity.INFO, Severity.CRITICAL)]
    first = next_send(waiting, pace_per_s=1, drain_target_s=1, bursting=False)
    assert first is not None and (first.indexes, first.bursting) == ((2,), True)
    second = next_send(waiting[:2], pace_per_s=1, drain_target_s=1, bursting=True)
    assert second is not None and (second.kind, second.indexes) == ("single", (0,))


def _claim(
    delivery_id: int, ack_code: str | None = None, severity: Severity = Severity.INFO, mode: Mode = "outage"
) -> Claimed:
    nid = f"n{delivery_id}"
    n = Notification(nid, nid, T0, severity, f"alert {delivery_id}")
    delivery = Delivery(delivery_id, nid, mode, "all", 0, "slack", DeliveryState.IN_FLIGHT, 1, None)
    return Claimed(delivery, n, ack_code)


def _outage() -> ProviderState:
    return ProviderState.OUTAGE


def _digesting(renderer: Renderer | None = None) -> Digesting:
    policy = DigestPolicy(pace_per_s=1, drain_target_s=1)
    return Digesting("slack", policy, renderer or Renderer(_outage), _outage)


def _digest_of(claims: list[Claimed]) -> DigestSend:
    digesting = _digesting()
    assert digesting.add(claims, LEASE) == []
    send = digesting.next()
    assert isinstance(send, DigestSend)
    return send


def test_digest_id_is_the_same_for_the_same_deliveries_in_any_order() -> None:
    """A retry or another node's takeover of the same deliveries sends the same id as idempotency key."""
    claims = [_claim(i) for i in (7, 3, 12)]
    first, again = _digest_of(claims), _digest_of(claims[::-1])
    assert first.digest.id == again.digest.id
    assert re.fullmatch(r"D[A-Z2-7]{10}", first.digest.id)
    assert first.message.idempotency_key == first.message.labels[DIGEST_LABEL] == first.digest.id
    assert _digest_of([*claims, _claim(13)]).digest.id != first.digest.id


def test_an_acknowledgeable_delivery_waits_for_its_own_slot() -> None:
    """An escalation step claimed in a burst is sent alone, with its ack code, not folded into a digest."""
    digesting = _digesting()
    digesting.add([_claim(1), _claim(2, "K7Q2XZ", Severity.CRITICAL), _claim(3), _claim(4)], LEASE)
    alone = digesting.next()
    assert isinstance(alone, Claimed) and alone.ack_code == "K7Q2XZ"
    digest = digesting.next()
    assert isinstance(digest, DigestSend) and [c.delivery.id for c in digest.carried] == [1, 3, 4]


class _Exploding(Renderer):
    def render(self, channel: str, claimed: Claimed) -> OutboundMessage:
        if claimed.delivery.id == 2:
            raise KeyError("team")
        return super().render(channel, claimed)


def test_a_delivery_that_cannot_be_rendered_comes_back_broken() -> None:
    """A renderer bug hands that delivery back with its error; the others still wait for their slot."""
    digesting = _digesting(_Exploding(_outage))
    (broken,) = digesting.add([_claim(1), _claim(2), _claim(3)], LEASE)
    assert isinstance(broken, Broken) and [c.delivery.id for c in broken.claimed] == [2]
    assert isinstance(broken.error, KeyError)
    assert digesting.room == digesting.policy.max_items - 2


def test_the_only_delivery_for_its_destination_goes_as_itself_during_a_burst() -> None:
    """A burst's slot for a destination with one delivery waiting sends it whole, not as a digest of one."""
    waiting = [
        *pending(Severity.HIGH, destination="db-oncall"),
        *pending(*[Severity.HIGH] * 20, destination="web"),
    ]
    choice = next_send(waiting, pace_per_s=1, drain_target_s=1, bursting=True)
    assert choice is not None and (choice.kind, choice.indexes, choice.bursting) == ("single", (0,), True)
    rest = next_send(waiting[1:], pace_per_s=1, drain_target_s=1, bursting=True)
    assert rest is not None and rest.kind == "digest" and len(rest.indexes) == 20


def test_claims_waiting_past_half_their_lease_are_renewed_or_given_up() -> None:
    """expiring names the claims whose lease ends first; renewed keeps those the store renewed (with
    their new lease) and hands back the others, which are no longer this node's to send."""
    digesting = _digesting()
    soon, later = T0 + timedelta(seconds=10), T0 + timedelta(seconds=200)
    digesting.add([_claim(1), _claim(2)], soon)
    digesting.add([_claim(3)], later)
    assert digesting.expiring(T0 + timedelta(seconds=150)) == [1, 2]
    lost = digesting.renewed([1, 2], {1}, T0 + timedelta(seconds=300))
    assert [c.delivery.id for c in lost] == [2]
    assert digesting.expiring(T0 + timedelta(seconds=250)) == [3]
    assert digesting.room == digesting.policy.max_items - 2


def test_claims_for_a_mode_no_longer_in_force_are_taken_out() -> None:
    """At recovery the claims made for the outage leave the waiting list (the outbox re-plans them)."""
    digesting = _digesting()
    digesting.add([_claim(1), _claim(2, mode="healthy"), _claim(3)], LEASE)
    assert [c.delivery.id for c in digesting.stale("healthy")] == [1, 3]
    assert digesting.stale("healthy") == []
    assert digesting.room == digesting.policy.max_items - 1


def test_deliveries_sent_in_a_digest_before_go_again_as_that_group() -> None:
    """A digest cut short (a crash, a lease taken over) or failed goes again as the same group first,
    whatever else waits, and not as a "first critical" and a new digest; one left alone goes as itself."""
    waiting = [
        *pending(Severity.WARNING, destination="ops"),
        Pending(Severity.CRITICAL, 1.0, "ops", group="DAAAAAAAAAA"),
        Pending(Severity.HIGH, 1.0, "ops", group="DAAAAAAAAAA"),
        *pending(*[Severity.CRITICAL] * 40, destination="ops"),
    ]
    choice = next_send(waiting, pace_per_s=1, drain_target_s=30, bursting=False)
    assert choice is not None and (choice.kind, choice.indexes, choice.bursting) == ("digest", (1, 2), True)
    lone = next_send(waiting[2:3], pace_per_s=1, drain_target_s=30, bursting=False)
    assert lone is not None and (lone.kind, lone.indexes) == ("single", (0,))
