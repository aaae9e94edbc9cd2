"""Fixtures for the mail stack: ``mail_stack`` to use it, ``mail_drill`` to stop parts of it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e import MailStack, require_stack, stack_lock, wait_listening


@pytest.fixture
def mail_stack() -> Iterator[MailStack]:
    """The running stack, held in shared mode: no drill stops it under this test."""
    stack = require_stack()
    with stack_lock(exclusive=False):
        yield stack


@pytest.fixture
def mail_drill() -> Iterator[MailStack]:
    """The stack, held exclusively; whatever the test stopped is started again afterwards."""
    stack = require_stack()
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: stopping and starting Postfix and Dovecot needs root")
        pytest.skip("stopping and starting Postfix and Dovecot needs root")
    with stack_lock(exclusive=True):
        try:
            yield stack
        finally:
            stack.ctl("start", "all")
            for port in (stack.smtp_port, stack.submission_port, stack.imap_port, stack.imaps_port):
                wait_listening(port, up=True)
