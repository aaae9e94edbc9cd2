"""The digest behind idempotency keys a client chooses (docs/api.md): what is one request."""

from __future__ import annotations

from daemon.api.models import NotificationIn
from daemon.api.submit import request_digest
from daemon.store.base import reused


def digest(**fields: object) -> str:
    return request_digest(NotificationIn.model_validate({"severity": "critical", "subject": "x", **fields}))


def test_one_request_however_it_is_written() -> None:
    """Defaults spelt out, labels in another order, the key itself: the same request."""
    assert digest() == digest(body="", source="api", recipients=[], labels={})
    assert digest(labels={"a": "1", "b": "2"}) == digest(labels={"b": "2", "a": "1"})
    assert digest(idempotency_key="k1") == digest(idempotency_key="k2")
    assert digest(subject="é ☃") == digest(subject="é ☃")


def test_another_request_differs_in_any_field() -> None:
    base = digest(recipients=["a@x.example", "b@x.example"])
    for other in (
        digest(severity="high", recipients=["a@x.example", "b@x.example"]),
        digest(subject="y", recipients=["a@x.example", "b@x.example"]),
        digest(body="more", recipients=["a@x.example", "b@x.example"]),
        digest(source="ci", recipients=["a@x.example", "b@x.example"]),
        digest(recipients=["b@x.example", "a@x.example"]),
        digest(recipients=["a@x.example", "b@x.example"], labels={"a": "1"}),
    ):
        assert reused(base, other)


def test_unknown_is_never_reuse() -> None:
    """No digest on either side (a key made by an intake, a row from before), or digests of two
    versions: a duplicate, as before digests existed."""
    assert not reused(None, digest())
    assert not reused(digest(), None)
    assert not reused("v0:abc", digest())
    assert reused("v1:abc", digest())
