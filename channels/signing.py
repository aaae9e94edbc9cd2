"""Standard Webhooks signatures: https://www.standardwebhooks.com/ (spec, "Signature scheme").

The signed content is ``{msg_id}.{timestamp}.{body}``; the key is the secret's bytes, given as
base64 with an optional ``whsec_`` prefix; the header value is ``v1,<base64 HMAC-SHA256>``.
Several secrets give several space-separated signatures, so a receiver can rotate its secret
without a window where valid deliveries fail.

Errors never carry the secret: a receipt or log line may quote them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from channels.base import ChannelConfigError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's format marker, not a secret
VERSION = "v1"
#: The spec suggests receivers reject timestamps further than this from their clock.
DEFAULT_TOLERANCE_S = 300.0


class SignatureError(ValueError):
    """The webhook signature does not verify."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key for ``secret`` (``whsec_`` + base64); unpadded base64 is accepted like the spec's libs."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChannelConfigError("webhook secret is not valid base64 (expected whsec_<base64>)") from exc
    if not key:
        raise ChannelConfigError("webhook secret is empty")
    return key


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.digest(key, signed, hashlib.sha256)
    return f"{VERSION},{base64.b64encode(digest).decode()}"


def secret_list(secret: str | Sequence[str]) -> tuple[str, ...]:
    """One secret or several (a rotation) as a tuple, each checked; raise if there is none."""
    secrets = (secret,) if isinstance(secret, str) else tuple(secret)
    if not secrets:
        raise ChannelConfigError("no webhook secret to sign with")
    for each in secrets:
        decode_secret(each)
    return secrets


def signing_keys(secret: str | Sequence[str]) -> tuple[bytes, ...]:
    """The HMAC key of each secret, decoded once (a sender signs every message with them)."""
    return tuple(decode_secret(s) for s in secret_list(secret))


def sign(secret: str | Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,<sig>`` per secret, space-separated."""
    return sign_with(signing_keys(secret), msg_id, timestamp, body)


def sign_with(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """:func:`sign` with keys from :func:`signing_keys`."""
    return " ".join(_signature(key, msg_id, timestamp, body) for key in keys)


def verify(
    secret: str | Sequence[str],
    msg_id: str,
    timestamp: int,
    body: bytes,
    signature_header: str,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise :class:`SignatureError` unless a ``v1`` signature in the header is fresh and matches.

    With several secrets (the receiver's side of a rotation) a match with any of them is enough.
    """
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError("webhook timestamp outside the tolerance window")
    expected = [_signature(decode_secret(s), msg_id, timestamp, body).encode() for s in secret_list(secret)]
    offered = [c.encode() for c in signature_header.split(" ") if c.startswith(f"{VERSION},")]
    # Compare every pair without stopping early, so timing does not tell which secret matched.
    matches = [hmac.compare_digest(c, e) for c in offered for e in expected]
    if not any(matches):
        raise SignatureError()
