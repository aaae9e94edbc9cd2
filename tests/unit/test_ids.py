"""Notification ids: ULIDs that sort in the order they were made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.ids import new_id

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def test_ids_within_one_millisecond_are_ordered() -> None:
    """A thousand ids made in the same millisecond sort in the order they were made."""
    ids = [new_id(T0) for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000


def test_ids_follow_time() -> None:
    """A later millisecond gives a larger id; ids are 26 Crockford base32 characters."""
    earlier, later = new_id(T0 + timedelta(days=1)), new_id(T0 + timedelta(days=2))
    assert earlier < later
    assert len(later) == 26
    assert set(later) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
