"""How long a refusal the server will lift (a full mailbox) keeps a step trying: daemon.outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from channels.base import ChannelError
from daemon.core.model import Delivery, DeliveryState, Notification, Severity
from daemon.outcomes import LATER_GIVE_UP, kept_for_later
from daemon.store.values import Claimed

CREATED = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FULL = ChannelError("452 4.2.2 Mailbox full", later=True)


def _claimed(*, fails_over: bool) -> Claimed:
    delivery = Delivery(1, "n-1", "healthy", "rest", 0, "email", DeliveryState.IN_FLIGHT, 12, None)
    notification = Notification("n-1", "k-1", CREATED, Severity.INFO, "nightly report")
    return Claimed(delivery, notification, then=("backup",) if fails_over else ())


@pytest.mark.parametrize(
    ("error", "fails_over", "age", "kept"),
    [
        (FULL, False, timedelta(hours=30), True),  # keeps trying past its attempts
        (FULL, False, LATER_GIVE_UP - timedelta(seconds=1), True),
        (FULL, False, LATER_GIVE_UP, False),  # RFC 5321 §4.5.4.1: 4-5 days, then it fails
        (FULL, True, timedelta(minutes=5), False),  # a failover list's next channel: as usual
        (ChannelError("450 busy"), False, timedelta(minutes=5), False),  # not a refusal to be lifted
    ],
)
def test_a_refusal_the_server_will_lift_keeps_trying_for_days_unless_the_plan_fails_over(
    error: ChannelError, fails_over: bool, age: timedelta, kept: bool
) -> None:
    assert kept_for_later(error, _claimed(fails_over=fails_over), CREATED + age) is kept
