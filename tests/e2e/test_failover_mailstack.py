"""The daemon's decisions against a real Postfix + Dovecot: outage, quorum, recovery by real round trips.

Checks: smtp (submission, STARTTLS, AUTH) and a round-trip canary, both triggers, quorum 2,
thresholds 2. Postfix stopped: both fail, outage. Dovecot stopped alone: the round trip fails but
SMTP works, the quorum is not met, no failover. Back: recovery only after clean rounds in which the
canary really arrived.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.config import parse_config
from daemon.core.model import CheckStatus, ProviderState
from tests.e2e import MailStack

CONFIG = """\
store: {{path: {store}}}
api: {{listen: "127.0.0.1:0", tokens: [{{name: t, token: e2e-token-0123456789}}]}}
provider:
  name: mailstack
  smtp: {{host: "{host}", port: {submission}, starttls: true, username: "{user}", password: "{password}",
          ca_file: "{ca}", timeout: 5s}}
  mail_from: "{user}"
  quorum: 2
  failure_threshold: 2
  success_threshold: 2
  checks:
    - {{type: smtp, every: 2s, timeout: 1500ms}}
    - type: roundtrip
      name: e2e-{tag}
      every: 3s
      timeout: 2500ms
      to: "{user}"
      warn_after: 30s
      fail_after: 60s
      imap: {{host: "{host}", port: {imap}, security: starttls, username: "{user}", password: "{password}",
              ca_file: "{ca}"}}
channels:
  email: {{type: email, to: ["{user}"]}}
routes:
  - {{match: {{}}, healthy: [email], outage: defer}}
"""


@pytest.fixture
async def daemon(mail_drill: MailStack, tmp_path: Path) -> AsyncIterator[Daemon]:
    text = CONFIG.format(
        store=tmp_path / "o.db", host=mail_drill.host, submission=mail_drill.submission_port,
        imap=mail_drill.imap_port, user=mail_drill.user, password=mail_drill.password, ca=mail_drill.ca_file,
        tag=uuid.uuid4().hex[:8],
    )  # fmt: skip
    running = Daemon(parse_config(text))
    await running.start()
    yield running
    await running.stop()


async def until(predicate: Callable[[], bool], what: str, deadline_s: float = 90.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached"
        await asyncio.sleep(0.1)


def latest(daemon: Daemon, check_prefix: str) -> CheckStatus | None:
    for name, results in daemon.monitor.tracker.recent.items():
        if name.startswith(check_prefix) and results:
            return results[-1].status
    return None


async def test_outage_quorum_and_recovery_against_the_real_stack(
    daemon: Daemon, mail_drill: MailStack
) -> None:
    """Postfix down → outage; Dovecot down alone → no failover; recovery needs canaries that arrive."""
    state = lambda: daemon.monitor.state  # noqa: E731
    await until(lambda: latest(daemon, "e2e-") is CheckStatus.OK, "a first round trip")
    await until(lambda: state() is ProviderState.HEALTHY, "healthy with everything up")

    await asyncio.to_thread(mail_drill.ctl, "stop", "postfix")
    await until(lambda: state() is ProviderState.OUTAGE, "outage with Postfix down")
    assert latest(daemon, "smtp") is CheckStatus.DOWN

    await asyncio.to_thread(mail_drill.ctl, "start", "postfix")
    await until(lambda: state() is ProviderState.HEALTHY, "recovery")
    assert latest(daemon, "e2e-") is CheckStatus.OK, "recovery was confirmed without a canary arriving"

    await asyncio.to_thread(mail_drill.ctl, "stop", "dovecot")
    await until(lambda: latest(daemon, "e2e-") is CheckStatus.DOWN, "the round trip failing")
    await until(lambda: latest(daemon, "smtp") is CheckStatus.OK, "smtp still working")
    assert state() in (ProviderState.HEALTHY, ProviderState.SUSPECT)
    assert daemon.monitor.mode == "healthy", "one trigger of two is below the quorum: no failover"
    await asyncio.to_thread(mail_drill.ctl, "start", "dovecot")
