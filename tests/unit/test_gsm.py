"""GSM-7 / UCS-2 detection, segment counting and shortening (channels.gsm)."""

from __future__ import annotations

import pytest

from channels.gsm import encoding_for, segment_count, segment_info, shorten


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Disk full on db-1", "GSM-7"),
        ("Prix: 5€ {ok} [x] ~ ^ | \\", "GSM-7"),
        ("Ærø Ñü ¿què? ¡sì! §12 £3 ¥4 @home", "GSM-7"),
        ("Outage — mail down", "UCS-2"),
        ("“quoted”", "UCS-2"),
        ("fire 🔥", "UCS-2"),
        ("Ça va", "GSM-7"),
        ("ça va", "UCS-2"),
        ("", "GSM-7"),
    ],
)
def test_encoding_is_detected_from_the_gsm7_alphabet(text: str, encoding: str) -> None:
    """Only characters outside the GSM-7 basic and extension tables force UCS-2."""
    assert encoding_for(text) == encoding


@pytest.mark.parametrize(
    ("text", "units", "segments"),
    [
        ("", 0, 1),
        ("a" * 160, 160, 1),
        ("a" * 161, 161, 2),
        ("a" * 306, 306, 2),
        ("a" * 307, 307, 3),
        ("a" * 459, 459, 3),
        ("a" * 460, 460, 4),
        ("€" * 80, 160, 1),
        ("€" * 81, 162, 2),
        ("é" * 70, 70, 1),
        ("ç" * 70, 70, 1),
        ("ç" * 71, 71, 2),
        ("ç" * 134, 134, 2),
        ("ç" * 135, 135, 3),
        ("🔥" * 35, 70, 1),
        ("🔥" * 36, 72, 2),
    ],
)
def test_segments_follow_the_single_and_concatenated_limits(text: str, units: int, segments: int) -> None:
    """160/153 septets for GSM-7, 70/67 UTF-16 units for UCS-2; extension and astral characters count 2."""
    info = segment_info(text)
    assert (info.units, info.segments) == (units, segments)


def test_extension_character_is_not_split_across_segments() -> None:
    """An escape sequence that would straddle the 153-septet boundary moves whole to the next segment."""
    assert segment_count("a" * 152 + "€" + "a" * 152) == 3
    assert segment_count("a" * 151 + "€" + "a" * 153) == 2


def test_surrogate_pair_is_not_split_across_segments() -> None:
    """An emoji straddling the 67-unit boundary moves whole to the next segment."""
    assert segment_count("ç" * 66 + "🔥" + "ç" * 66) == 3
    assert segment_count("ç" * 65 + "🔥" + "ç" * 67) == 2


def test_shorten_returns_a_fitting_text_unchanged() -> None:
    """A text that already fits gets only its suffix appended."""
    assert shorten("hello", 1, suffix=" [n1]") == "hello [n1]"


@pytest.mark.parametrize("max_segments", [1, 2, 3])
def test_shorten_fills_but_never_exceeds_max_segments_in_gsm7(max_segments: int) -> None:
    """A long GSM-7 text is cut to exactly fill the budget, ending in '...' and the suffix."""
    text = shorten("x" * 2000, max_segments, suffix=" [n1]")
    budget = 160 if max_segments == 1 else 153 * max_segments
    assert text.endswith("x... [n1]")
    # "[" and "]" are extension-table characters: two septets each.
    assert segment_info(text).units == budget
    assert encoding_for(text) == "GSM-7"
    assert segment_count(text) == max_segments


@pytest.mark.parametrize("max_segments", [1, 3])
def test_shorten_fills_but_never_exceeds_max_segments_in_ucs2(max_segments: int) -> None:
    """A long UCS-2 text is cut to the 70/67-unit budget, ending in '…' and the suffix."""
    text = shorten("ç" * 2000, max_segments, suffix=" [n1]")
    budget = 70 if max_segments == 1 else 67 * max_segments
    assert text.endswith("ç… [n1]")
    assert len(text) == budget
    assert segment_count(text) == max_segments


def test_shorten_keeps_gsm7_by_avoiding_the_unicode_ellipsis() -> None:
    """Cutting a GSM-7 text never introduces a character that would switch it to UCS-2."""
    assert encoding_for(shorten("word " * 100, 1, suffix=" [id]")) == "GSM-7"


def test_shorten_counts_extension_characters_double() -> None:
    """A text of euro signs fits half as many characters per segment."""
    text = shorten("€" * 500, 1, suffix=" [n1]")
    assert segment_info(text).units <= 160
    assert text.endswith("€... [n1]")


def test_shorten_refuses_a_suffix_that_cannot_fit() -> None:
    """A suffix longer than the whole budget is a caller error, not a silent cut of the id."""
    with pytest.raises(ValueError, match="does not fit"):
        shorten("text", 1, suffix="x" * 200)
