"""A server's reply that is not UTF-8 becomes text that can be stored and reported."""

from __future__ import annotations

from channels.base import ChannelError, Receipt, Refusal, clean_text


def escaped(raw: bytes) -> str:
    """As aiosmtplib hands such a reply on: its bytes as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def test_latin1_is_read_as_windows_1252() -> None:
    assert clean_text(escaped(b"5.1.1 Empf\xe4nger unbekannt")) == "5.1.1 Empfänger unbekannt"
    assert clean_text(escaped(b"\x93quoted\x94 \x80")) == "\u201cquoted\u201d \u20ac"


def test_utf8_and_ascii_are_kept() -> None:
    assert clean_text("5.1.1 Empfänger unbekannt") == "5.1.1 Empfänger unbekannt"
    assert clean_text(escaped("Empfänger".encode())) == "Empfänger"
    assert clean_text("250 OK") == "250 OK"


def test_a_lone_surrogate_becomes_a_replacement() -> None:
    assert clean_text("a\ud800b").encode("utf-8")


def test_refusals_receipts_and_errors_hold_clean_text() -> None:
    text = escaped(b"5.1.1 Empf\xe4nger unbekannt")
    assert Refusal("gone@example.com", 550, text).text == "5.1.1 Empfänger unbekannt"
    assert Receipt("email", detail=text).detail == "5.1.1 Empfänger unbekannt"
    assert ChannelError(text).reason == "5.1.1 Empfänger unbekannt"
