"""After an acknowledgement, the messages that asked for one say who gave it.

An escalation's Slack messages carry an Acknowledge button (docs/policies.md). Once someone
acknowledges, by the API, that button or an SMS reply, every message already posted for the
notification on a channel that can edit its posts (:class:`~channels.base.EditsOnAck`: Slack's Web
API) is rewritten: the same content, the button replaced by "Acknowledged by alice (slack) at
10:32 UTC", so nobody else in the channel picks it up and nobody clicks a button that does nothing.

Best effort and after the fact: the acknowledgement is committed before this starts, and a message
that cannot be edited (the message deleted, Slack still refusing after the channel's own few tries
for rate limits and faults on its side) is logged (``ack.update_failed``), not retried from here:
it is a courtesy to the readers, not a notification. The trail in the store is the record. A send
that reached some of its targets and failed on others (to be retried, or superseded by the
acknowledgement) kept what it posted on its delivery, and that is edited too.
A send still in flight when the acknowledgement comes (posted, its outcome not yet recorded) is
waited for, every WAIT_EVERY_S for at most WAIT_FOR_S, and its message edited once it is recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC

from channels.base import Acknowledgement, Channel, ChannelError, EditsOnAck
from daemon.clock import Clock
from daemon.core.model import DeliveryState
from daemon.rendering import Renderer
from daemon.store.base import Store, StoreError
from daemon.store.values import Claimed, NotificationView

log = logging.getLogger(__name__)

#: how long a stop waits for edits still being made
DRAIN_S = 5.0
#: a send in flight at the acknowledgement: how often to look whether it was delivered, how long
WAIT_EVERY_S = 0.5
WAIT_FOR_S = 60.0


class AckUpdates:
    def __init__(
        self,
        store: Store,
        channels: Callable[[], Mapping[str, Channel]],
        renderer: Renderer,
        clock: Clock,
    ) -> None:
        self._store = store
        self._channels = channels
        self._renderer = renderer
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def acknowledged(self, notification_id: str, by: str, via: str) -> None:
        """Called once an acknowledgement is committed: the edits run in the background."""
        ack = Acknowledgement(shown_as(by, via), via, self._clock.now().astimezone(UTC))
        task = asyncio.create_task(self._update(notification_id, ack), name=f"ack-update-{notification_id}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("showing an acknowledgement failed", exc_info=exc, extra={"event": "ack.update_failed"})

    async def drain(self) -> None:
        """At stop: let the edits under way finish, for at most DRAIN_S; the rest are dropped."""
        self._stopping = True  # edits waiting for a send in flight give up: the sends are stopping
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=DRAIN_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _update(self, notification_id: str, ack: Acknowledgement) -> None:
        editable = {name: c for name, c in self._channels().items() if isinstance(c, EditsOnAck)}
        deadline = self._clock.monotonic() + WAIT_FOR_S
        while editable:
            try:
                view = await self._store.notification(notification_id)
            except StoreError as exc:
                log.warning("cannot read %s to show its acknowledgement: %s", notification_id, exc)
                return
            if view is None:
                return
            for name in list(editable):
                states = {d.state for d in view.deliveries if d.channel == name}
                if DeliveryState.IN_FLIGHT not in states:
                    await self._edit(view, name, editable.pop(name), ack)
            if not editable:
                return
            if self._stopping or self._clock.monotonic() >= deadline:
                _gave_up(notification_id, editable)
                return
            await asyncio.sleep(WAIT_EVERY_S)  # a send in flight: edit its message once recorded

    async def _edit(
        self, view: NotificationView, name: str, channel: EditsOnAck, ack: Acknowledgement
    ) -> None:
        # Whatever its state now: a send that posted to some of its targets and failed on others
        # kept what it posted on its delivery (threaded into and edited like a delivered one)
        sent = [d for d in view.deliveries if d.channel == name]
        if not sent:
            return
        fields = {"event": "ack.updated", "channel": name, "notification_id": view.notification.id}
        try:
            remote_id = await self._store.thread_of(view.notification.idempotency_key, name, any_state=True)
            if remote_id is None:
                return
            message = self._renderer.render(name, Claimed(sent[-1], view.notification, ack_code=None))
            edited = await channel.acknowledged(remote_id, message, ack)
        except (ChannelError, StoreError) as exc:
            failed = fields | {"event": "ack.update_failed"}
            log.warning("could not show the acknowledgement on %s: %s", name, exc, extra=failed)
            return
        shown = fields | {"messages": edited}
        log.info("acknowledgement shown on %s (%d messages)", name, edited, extra=shown)


def _gave_up(notification_id: str, channels: Mapping[str, EditsOnAck]) -> None:
    for name in channels:
        fields = {"event": "ack.update_failed", "channel": name, "notification_id": notification_id}
        log.warning("the acknowledgement is not shown on %s: its send is still in flight", name, extra=fields)


def shown_as(by: str, via: str) -> str:
    """Who acknowledged, as a shared channel shows it: an SMS sender by the last digits of the
    number only (the trail in the store has it whole)."""
    return f"…{by[-4:]}" if via == "sms" and len(by) > 4 else by
