"""Telling people about the provider: each meaningful transition becomes a notification.

The announcement goes through the same outbox and routing policy as everything else, so ops hear
about an outage through the backup channels the policy names for that severity (email is what is
down), and about the recovery by email again. ``suspect`` is not announced: it is routine noise.
"""

from __future__ import annotations

import asyncio
import logging

from daemon.core.health import Transition
from daemon.core.model import ProviderState, Severity
from daemon.intake.accept import Acceptor, Submission
from daemon.store.base import StoreUnavailable

log = logging.getLogger(__name__)

SOURCE = "backchannel"
#: how loud each state is; states missing here are not announced
SEVERITY = {
    ProviderState.OUTAGE: Severity.CRITICAL,
    ProviderState.HEALTHY: Severity.HIGH,
    ProviderState.UNKNOWN: Severity.HIGH,
    ProviderState.CREDENTIALS: Severity.HIGH,
    ProviderState.FLAPPING: Severity.HIGH,
}
HEADLINES = {
    ProviderState.OUTAGE: "{name} is DOWN: critical notifications now go through backup channels",
    ProviderState.HEALTHY: "{name} is back: mail flows again, held notifications are being sent",
    ProviderState.UNKNOWN: "backchannel cannot tell whether {name} works: its own network looks down",
    ProviderState.CREDENTIALS: "{name} refuses backchannel's credentials: renew them (not an outage)",
    ProviderState.FLAPPING: "{name} keeps failing and recovering: routing stays on the backup channels",
}


class Announcer:
    def __init__(self, acceptor: Acceptor, provider_name: str) -> None:
        self._acceptor = acceptor
        self._name = provider_name
        self._tasks: set[asyncio.Task[None]] = set()

    def transition(self, transition: Transition) -> None:
        """A monitor listener: queue the announcement without holding up the monitor."""
        severity = SEVERITY.get(transition.to_state)
        routine = transition.from_state == ProviderState.SUSPECT  # suspect -> healthy: a blip, not news
        if severity is None or (routine and transition.to_state == ProviderState.HEALTHY):
            return
        at = transition.at.isoformat()
        submission = Submission(
            severity=severity,
            subject=HEADLINES[transition.to_state].format(name=self._name),
            body=f"{transition.from_state.value} -> {transition.to_state.value} at {at}\n"
            f"Why: {transition.cause}",
            source=SOURCE,
            labels={"event": "provider.transition", "state": transition.to_state.value},
            idempotency_key=f"transition:{at}:{transition.to_state.value}",
        )
        task = asyncio.get_running_loop().create_task(self._accept(submission))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, submission: Submission) -> None:
        try:
            await self._acceptor.accept([submission])
        except StoreUnavailable as exc:
            log.error("could not queue the announcement: %s", exc, extra={"event": "announce.failed"})

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
