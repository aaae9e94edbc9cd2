"""A channel that sends nothing: the shipped test double, in the spirit of httpx's MockTransport.

It records every message it is handed (``attempts``) and the ones it "delivered" (``sent``),
answers from a script of outcomes (a :class:`ChannelError` is raised, ``None`` or a
:class:`Receipt` is a success; an empty script means success), and can hold every send at an
:class:`asyncio.Event` gate so a test can look at the world while sends are in flight.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from channels.base import ChannelError, OutboundMessage, Receipt

Outcome = ChannelError | Receipt | None


class FakeChannel:
    """Record sends and answer them from a script."""

    def __init__(
        self,
        name: str = "fake",
        *,
        script: Iterable[Outcome] = (),
        gate: asyncio.Event | None = None,
    ) -> None:
        self.name = name
        self.gate = gate
        #: messages whose send succeeded, in order
        self.sent: list[OutboundMessage] = []
        #: every message handed to send(), whatever its outcome
        self.attempts: list[OutboundMessage] = []
        #: sends currently started and not finished (waiting at the gate, typically)
        self.in_flight = 0
        self.closed = False
        self._script: deque[Outcome] = deque(script)
        self._always: ChannelError | None = None

    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes for the next sends, after any already queued."""
        self._script.extend(outcomes)

    def fail_always(self, error: ChannelError | None) -> None:
        """Raise ``error`` on every send from now on (the script is dropped); ``None`` lifts it."""
        self._script.clear()
        self._always = error

    @property
    def pending_outcomes(self) -> int:
        return len(self._script)

    async def send(self, message: OutboundMessage) -> Receipt:
        if self.closed:
            raise RuntimeError(f"channel {self.name} used after aclose()")
        self.attempts.append(message)
        self.in_flight += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            outcome = self._next_outcome()
        finally:
            self.in_flight -= 1
        if isinstance(outcome, ChannelError):
            raise outcome
        self.sent.append(message)
        return outcome or Receipt(channel=self.name, detail="fake: delivered")

    async def aclose(self) -> None:
        self.closed = True

    def _next_outcome(self) -> Outcome:
        if self._always is not None:
            return self._always
        return self._script.popleft() if self._script else None
