"""Turning validated submissions into notifications committed to the outbox.

Every intake (HTTP, Alertmanager, SMTP) ends here: ids are assigned, both modes' plans are
computed by the pure router, and the store commits the lot in one durable transaction before
anyone is told "accepted".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from daemon.clock import Clock
from daemon.core.model import Notification, Severity
from daemon.core.routing import Route, all_plans_for
from daemon.ids import new_id
from daemon.store.base import Store, StoreUnavailable
from daemon.store.values import Accepted, NewNotification
from daemon.store_health import Failing, Proof, StoreHealth

#: what no store can keep as text: NUL (PostgreSQL's text and jsonb refuse it) and lone surrogates
#: (not UTF-8: SQLite's driver refuses them), both valid in a JSON string
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


@dataclass(frozen=True, slots=True)
class Submission:
    severity: Severity
    subject: str
    body: str = ""
    source: str = "api"
    recipients: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    mail_from: str | None = None
    #: the original RFC 5322 message (SMTP intake): relayed byte for byte while the provider is healthy
    raw: bytes | None = None
    #: a digest of the request, where its client chose ``idempotency_key``: the key coming back
    #: with another digest is refused (:class:`~daemon.store.base.KeyReused`)
    digest: str | None = None


class Acceptor:
    def __init__(
        self,
        store: Store,
        routes: Callable[[], Sequence[Route]],
        clock: Clock,
        on_accepted: Callable[[], None],
        *,
        store_health: StoreHealth | None = None,
    ) -> None:
        """``store_health``: told whether each accept committed (readiness, :mod:`daemon.store_health`)."""
        self._store = store
        self._routes = routes
        self._clock = clock
        self._on_accepted = on_accepted
        self._health = store_health
        self._listeners: list[Callable[[Sequence[Notification], Sequence[Accepted]], None]] = []

    async def accept(self, submissions: Sequence[Submission]) -> list[Accepted]:
        """Commit every submission durably; raises StoreUnavailable if nothing could be committed,
        KeyReused (nothing committed) if one reuses its client's key for another request."""
        now = self._clock.now()
        routes = self._routes()
        items = []
        for s in submissions:
            notification = self._build(s, now)
            plans, overrides = all_plans_for(notification, routes, now)
            items.append(NewNotification(notification, plans, digest=s.digest, overrides=overrides))
        notifications = [item.notification for item in items]
        told = False

        def visible(accepted: list[Accepted]) -> None:
            nonlocal told
            told = True
            self._on_accepted()
            for listener in self._listeners:
                listener(notifications, accepted)

        try:
            accepted = await self._store.accept(items, now, on_visible=visible)
        except StoreUnavailable as exc:
            self._heard(Proof.COMMIT, exc)
            raise
        # duplicates alone were looked up, not written: on a full disk they are still answered
        self._heard(Proof.COMMIT if any(not a.duplicate for a in accepted) else Proof.READ, None)
        if not told:
            visible(accepted)
        return accepted

    async def store_failing(self) -> Failing | None:
        """Why the store cannot commit now, None while it works (or no health is kept): asked
        before a client transmits its message (SMTP's MAIL FROM). While nothing has failed this
        answers at once, with no probe: reading a quiet store would hold the client up to
        :data:`~daemon.store_health.ANSWER_WITHIN_S` and prove nothing about committing (a full
        disk still reads), and a store that stopped committing is caught by the accept itself.
        Once something failed it is the health's verdict, whose bounded commit probe finds the
        store committing again."""
        if self._health is None or self._health.failing is None:
            return None
        return await self._health.verdict()

    def _heard(self, proof: Proof, failure: StoreUnavailable | None) -> None:
        if self._health is not None:
            self._health.heard(proof, failure)

    def subscribe(self, listener: Callable[[Sequence[Notification], Sequence[Accepted]], None]) -> None:
        """Called once per accept with the notifications and what became of each, as soon as
        they are committed and visible to the dispatcher, which may be a moment before they are
        durable (the SQLite store syncs its log after the commit; the caller is answered after
        that): delivery starts while the disk syncs. If the sync fails the caller gets the error,
        though the notifications are in the outbox and are delivered; a retry is a duplicate."""
        self._listeners.append(listener)

    @staticmethod
    def _build(s: Submission, now: datetime) -> Notification:
        notification_id = new_id(now)
        return Notification(
            id=notification_id,
            idempotency_key=storable(s.idempotency_key or notification_id),
            created_at=now,
            severity=s.severity,
            subject=storable(s.subject),
            body=storable(s.body),
            source=storable(s.source),
            recipients=tuple(storable(r) for r in s.recipients),
            labels={storable(k): storable(v) for k, v in s.labels.items()},
            mail_from=None if s.mail_from is None else storable(s.mail_from),
            raw=s.raw,
        )


def storable(text: str) -> str:
    """``text`` with what no store keeps as text (a NUL, a lone surrogate) made U+FFFD: the same
    notification is kept alike by SQLite and PostgreSQL, and never refused over and over (a 503 that
    its sender retries for ever) nor failing the requests committed beside it."""
    if text.isascii():  # the common case, told at once: only a NUL can be wrong in it
        return text.replace("\x00", REPLACEMENT) if "\x00" in text else text
    return _UNSTORABLE.sub(REPLACEMENT, text)
