"""Standard Webhooks signing: checked against the spec's vector and the reference library."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from channels.base import ChannelConfigError
from channels.signing import SignatureError, decode_secret, secret_list, sign, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_" + base64.b64encode(b"another-secret-of-some-length").decode()
BODY = b'{"test": 2432232314}'


def test_sign_matches_the_spec_vector() -> None:
    """The example in the Standard Webhooks spec signs to its published value."""
    signature = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, BODY)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_reference_library_verifies_our_signature() -> None:
    """standardwebhooks.Webhook accepts what sign() produces."""
    now = int(time.time())
    headers = {"webhook-id": "n-1", "webhook-timestamp": str(now)}
    headers["webhook-signature"] = sign(SECRET, "n-1", now, BODY)
    assert Webhook(SECRET).verify(BODY, headers) == {"test": 2432232314}


def test_several_secrets_give_space_separated_signatures() -> None:
    """Each secret contributes one signature, so either key verifies during a rotation."""
    now = int(time.time())
    header = sign([SECRET, OTHER], "n-1", now, BODY)
    assert header.split(" ") == [sign(SECRET, "n-1", now, BODY), sign(OTHER, "n-1", now, BODY)]
    headers = {"webhook-id": "n-1", "webhook-timestamp": str(now), "webhook-signature": header}
    Webhook(OTHER).verify(BODY, headers)


def test_secret_without_prefix_is_the_same_key() -> None:
    """The whsec_ prefix is optional, as in the reference libraries."""
    assert decode_secret(SECRET) == decode_secret(SECRET.removeprefix("whsec_"))


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_", ""])
def test_unusable_secret_is_a_config_error_without_the_secret(secret: str) -> None:
    """A bad secret raises ChannelConfigError whose message does not quote it."""
    with pytest.raises(ChannelConfigError) as info:
        sign(secret, "n-1", 1, BODY)
    assert info.value.permanent
    if secret.removeprefix("whsec_"):
        assert secret.removeprefix("whsec_") not in str(info.value)


def test_no_secret_at_all_is_a_config_error() -> None:
    """An empty list of secrets cannot sign."""
    with pytest.raises(ChannelConfigError):
        sign([], "n-1", 1, BODY)


def test_verify_accepts_a_reference_signature() -> None:
    """verify() accepts a header produced by the reference library."""
    now = int(time.time())
    header = Webhook(SECRET).sign("n-1", datetime.fromtimestamp(now, UTC), BODY.decode())
    verify(SECRET, "n-1", now, BODY, f"v1,bogus {header}", now=now)


def test_verify_rejects_a_tampered_body() -> None:
    """A changed body no longer matches."""
    now = int(time.time())
    header = sign(SECRET, "n-1", now, BODY)
    with pytest.raises(SignatureError):
        verify(SECRET, "n-1", now, BODY + b" ", header, now=now)


def test_verify_rejects_a_stale_timestamp() -> None:
    """A signature older than the tolerance is refused even if it matches (replay)."""
    header = sign(SECRET, "n-1", 1000, BODY)
    with pytest.raises(SignatureError):
        verify(SECRET, "n-1", 1000, BODY, header, now=1000 + 301)


def test_reference_library_rejects_a_signature_by_another_secret() -> None:
    """A signature made with another key does not verify."""
    now = int(time.time())
    headers = {"webhook-id": "n-1", "webhook-timestamp": str(now)}
    headers["webhook-signature"] = sign(OTHER, "n-1", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, headers)


def test_reference_library_verifies_either_secret_during_rotation() -> None:
    """Signed with the new and the old secret, standardwebhooks verifies under each of them."""
    now = int(time.time())
    headers = {"webhook-id": "n-1", "webhook-timestamp": str(now)}
    headers["webhook-signature"] = sign([SECRET, OTHER], "n-1", now, BODY)
    for secret in (SECRET, OTHER):
        assert Webhook(secret).verify(BODY, headers) == {"test": 2432232314}


def test_verify_with_several_secrets_accepts_either() -> None:
    """A receiver mid-rotation accepts a signature made by its old or its new secret."""
    now = int(time.time())
    for signer in (SECRET, OTHER):
        verify([SECRET, OTHER], "n-1", now, BODY, sign(signer, "n-1", now, BODY), now=now)


def test_verify_with_several_secrets_rejects_a_third() -> None:
    """A signature by a secret outside the rotation pair is refused."""
    now = int(time.time())
    third = "whsec_" + base64.b64encode(b"a-third-secret-nobody-configured").decode()
    with pytest.raises(SignatureError):
        verify([SECRET, OTHER], "n-1", now, BODY, sign(third, "n-1", now, BODY), now=now)


def test_secret_list_checks_every_secret() -> None:
    """One bad secret among several is a config error, raised before any signing."""
    with pytest.raises(ChannelConfigError):
        secret_list([SECRET, "whsec_%%%"])
    assert secret_list(SECRET) == (SECRET,)
