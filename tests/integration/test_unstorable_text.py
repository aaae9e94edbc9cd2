"""Text no store can keep (a NUL, which PostgreSQL's text and jsonb refuse; a lone surrogate, which is
not UTF-8), both valid in a JSON string: accepted alike by both stores, as U+FFFD, and never failing
the requests committed beside it. Found by a review: PostgreSQL answered 503 to every retry of such a
request, and to the requests batched with it; SQLite failed the neighbours of a lone surrogate."""

from __future__ import annotations

import asyncio

from daemon.clock import SystemClock
from daemon.core.model import Severity
from daemon.core.routing import Matcher, Route
from daemon.intake.accept import Acceptor, Submission, storable
from daemon.store.base import Store

ROUTES = (Route("all", Matcher(), ("email",), ("hook",)),)


async def test_nul_and_lone_surrogates_are_stored_as_replacement_characters(store: Store) -> None:
    acceptor = Acceptor(store, lambda: ROUTES, SystemClock(), lambda: None)
    odd = Submission(
        Severity.CRITICAL,
        "disk\x00full",
        body="half \ud800 a pair",
        recipients=("ops\x00@example.com",),
        labels={"host\x00": "db\udfff1"},
        mail_from="app\x00@example.com",
        idempotency_key="key\x00one",
    )
    plain = Submission(Severity.CRITICAL, "an ordinary alert beside it")
    # concurrent: one transaction for both on either store
    (first,), (second,) = await asyncio.gather(acceptor.accept([odd]), acceptor.accept([plain]))
    stored = await store.notification(first.id)
    assert stored is not None
    n = stored.notification
    assert (n.subject, n.body) == ("disk\ufffdfull", "half \ufffd a pair")
    assert n.recipients == ("ops\ufffd@example.com",)
    assert n.labels == {"host\ufffd": "db\ufffd1"}
    assert (n.mail_from, n.idempotency_key) == ("app\ufffd@example.com", "key\ufffdone")
    assert await store.notification(second.id) is not None
    # the same request again is the same notification (its key is kept the same way)
    (again,) = await acceptor.accept([odd])
    assert again.duplicate and again.id == first.id


def test_storable_leaves_ordinary_text_alone() -> None:
    assert storable("naïve 🚨 résumé") == "naïve 🚨 résumé"
    assert storable("\x00") == "\ufffd"
