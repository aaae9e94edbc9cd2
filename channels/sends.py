"""What a channel has sent, per notification and destination, so that a retry sends only what did
not go: the send after another destination failed for now (Slack's targets, SMS's numbers) must
not post or text the ones already reached again. In memory, the newest LIMIT kept: a restart
between a partial send and its retry sends again to those reached (at least once)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: sends remembered per channel
LIMIT = 4096


class Sends(Generic[K]):
    def __init__(self) -> None:
        self._sent: OrderedDict[K, str] = OrderedDict()

    def get(self, key: K) -> str | None:
        """The remote id of what was sent under ``key``, or None."""
        return self._sent.get(key)

    def remember(self, key: K, remote_id: str) -> None:
        self._sent[key] = remote_id
        if len(self._sent) > LIMIT:
            self._sent.popitem(last=False)

    def newest_first(self) -> Iterator[tuple[K, str]]:
        return reversed(self._sent.items())
