"""SMS text arithmetic: GSM-7 or UCS-2, how many segments, and shortening to fit.

A text goes out as GSM-7 (3GPP TS 23.038 default alphabet) when every character is in the
basic table or its extension table, otherwise the whole text goes out as UCS-2. One character
outside GSM-7 (an emoji, an em dash, a curly quote) halves what a segment holds.

=========  ==============  ====================================  ====================
encoding   single segment  each segment of a concatenated text   a character costs
=========  ==============  ====================================  ====================
GSM-7      160 septets     153 septets (7 go to the UDH)         1, extension table 2
UCS-2      70 units        67 units (6 octets go to the UDH)     1, outside BMP 2
=========  ==============  ====================================  ====================

A character is never split across segments: an extension-table character is an escape plus a
septet, an astral character is a surrogate pair, and handsets reassemble only whole
characters, so both move whole to the next segment (as Twilio's segment calculator shows,
https://twiliodeved.github.io/message-segment-calculator/). National language shift tables are
not used: Twilio does not send them (https://www.twilio.com/docs/glossary/what-is-gsm-7-character-encoding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: Sent as ESC plus one septet, so each costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

_SINGLE: dict[Encoding, int] = {"GSM-7": 160, "UCS-2": 70}
_CONCATENATED: dict[Encoding, int] = {"GSM-7": 153, "UCS-2": 67}


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """How a text goes out: its encoding, its length in septets or UTF-16 units, its segments."""

    encoding: Encoding
    units: int
    segments: int


def encoding_for(text: str) -> Encoding:
    """GSM-7 when every character is in the default alphabet or its extension, else UCS-2."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return "GSM-7"
    return "UCS-2"


def char_units(char: str, encoding: Encoding) -> int:
    """What one character costs: septets in GSM-7, UTF-16 code units in UCS-2."""
    if encoding == "GSM-7":
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def segment_info(text: str) -> SegmentInfo:
    """The encoding, length and segment count of ``text`` (an empty text is still one SMS)."""
    encoding = encoding_for(text)
    costs = [char_units(c, encoding) for c in text]
    units = sum(costs)
    if units <= _SINGLE[encoding]:
        return SegmentInfo(encoding, units, 1)
    return SegmentInfo(encoding, units, _pack(costs, _CONCATENATED[encoding]))


def segment_count(text: str) -> int:
    return segment_info(text).segments


def _pack(costs: list[int], per_segment: int) -> int:
    """Segments needed when characters fill segments in order and none is split."""
    segments, used = 1, 0
    for cost in costs:
        if used + cost > per_segment:
            segments, used = segments + 1, 0
        used += cost
    return segments


def shorten(text: str, max_segments: int, *, suffix: str = "") -> str:
    """``text`` + ``suffix`` if it fits in ``max_segments``, else ``text`` cut short, an ellipsis, ``suffix``.

    The suffix (a notification id, say) is always kept whole. The ellipsis is "..." or "…",
    whichever keeps more of ``text``: "…" is not in GSM-7 and turns the whole text into UCS-2, so
    "..." wins once the characters outside GSM-7 are cut away (chosen by the full text, a cut-off
    emoji kept ~190 characters in UCS-2 instead of ~450 in GSM-7), and "…" while one is kept.
    Raises ValueError when even the suffix alone does not fit.
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, got {max_segments}")
    if segment_count(text + suffix) <= max_segments:
        return text + suffix
    kept = [k for k in (_kept(text, e, suffix, max_segments) for e in _ELLIPSES) if k is not None]
    if not kept:
        raise ValueError(f"the suffix {suffix!r} alone does not fit in {max_segments} segment(s)")
    keep, ellipsis = max(kept, key=lambda k: k[0])  # the first of equals: "..."
    return text[:keep].rstrip() + ellipsis + suffix


#: GSM-7's first: it wins a tie
_ELLIPSES = ("...", "\u2026")


def _kept(text: str, ellipsis: str, suffix: str, max_segments: int) -> tuple[int, str] | None:
    """How much of ``text`` fits before ``ellipsis`` and ``suffix``, or None if nothing does."""

    def fits(keep: int) -> bool:
        return segment_count(text[:keep].rstrip() + ellipsis + suffix) <= max_segments

    if not fits(0):
        return None
    # The segment count never falls as the kept prefix grows, so bisect for the longest that fits.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low, ellipsis
