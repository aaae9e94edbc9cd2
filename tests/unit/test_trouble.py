"""A failure repeated every pass is logged when it starts, once a minute while it lasts, and when it ends."""

from __future__ import annotations

import logging

import pytest

from daemon.trouble import Trouble


def test_a_failure_every_second_logs_once_a_minute_then_its_end(caplog: pytest.LogCaptureFixture) -> None:
    trouble = Trouble(logging.getLogger("t"), "the outbox cannot be read", "store.failed")
    with caplog.at_level(logging.WARNING, logger="t"):
        for second in range(131):  # a pass a second, failing for 131 s
            trouble.failed(float(second), OSError("disk I/O error"))
        trouble.succeeded(131.0)
        trouble.succeeded(132.0)  # nothing more to say
    lines = [(r.levelname, getattr(r, "event", None), r.getMessage()) for r in caplog.records]
    assert lines == [
        ("ERROR", "store.failed", "the outbox cannot be read: disk I/O error"),
        ("ERROR", "store.failed", "the outbox cannot be read for 60 s (61 times): disk I/O error"),
        ("ERROR", "store.failed", "the outbox cannot be read for 120 s (121 times): disk I/O error"),
        ("WARNING", "store.failed.over", "the outbox cannot be read: over after 131 s (131 times)"),
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="t"):
        trouble.failed(200.0, OSError("again"))
    assert [r.getMessage() for r in caplog.records] == ["the outbox cannot be read: again"]
