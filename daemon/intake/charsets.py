"""Text in the charsets mail is really written in: bodies and RFC 2047 encoded words. Pure.

Mail labels its text with charsets that Python lacks, reads narrower than senders mean, or names
wrongly (no label on UTF-8, Latin-1 on Windows-1252); and the email package's decoders raise on
an unknown charset or bad base64. Here nothing raises: what cannot be decoded as labelled is read
as UTF-8, else Windows-1252, with replacement characters.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.quoprimime
import re

#: charset labels real mail uses that Python lacks (windows-874, iso-8859-8-i, x-sjis, x-gbk) or reads
#: narrower than senders mean: GB2312 and KS C 5601 mail is written by GBK and Windows' Korean
#: encoders, whose extra characters the strict codecs replace (the WHATWG Encoding Standard reads
#: these labels so too: https://encoding.spec.whatwg.org/#names-and-labels)
_CHARSET_ALIASES = {
    "gb2312": "gbk",
    "x-gbk": "gbk",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "x-sjis": "shift_jis",
    "ks_c_5601-1987": "cp949",
}


def _codec(label: str | None) -> str | None:
    """Python's codec for a charset label, through the aliases; None for no label or an unknown one."""
    if not label:
        return None
    name = label.strip().lower()
    try:
        return codecs.lookup(_CHARSET_ALIASES.get(name, name)).name
    except (LookupError, ValueError):
        return None


def misread(label: str) -> bool:
    """Whether the email package would decode text so labelled wrongly: unknown to it, or aliased."""
    return label.strip().lower() in _CHARSET_ALIASES or _codec(label) is None


def decoded(payload: bytes, label: str | None) -> str:
    """``payload`` as text by its charset label, read as senders mean it; never raises. No label,
    ASCII or an unknown one: UTF-8 (scripts write it), else Windows-1252. Latin-1: Windows-1252,
    whose quotes and euro sign Latin-1 lacks (the WHATWG Encoding Standard decodes the label so too)."""
    codec = _codec(label)
    if codec is None or codec == "ascii":
        return _utf8_else_cp1252(payload)
    try:
        return payload.decode("cp1252" if codec == "iso8859-1" else codec, errors="replace")
    except (LookupError, ValueError):  # not a text codec (rot-13, base64), or one without "replace" (idna)
        return _utf8_else_cp1252(payload)


def _utf8_else_cp1252(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("cp1252", errors="replace")


#: an RFC 2047 encoded word; an RFC 2231 language (``utf-8*en``) may follow the charset
ENCODED_WORD = re.compile(r"=\?([^?*\s]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
#: RFC 2047 section 6.2: the white space between two adjacent encoded words is not shown
_BETWEEN_WORDS = re.compile(r"(?<=\?=)\s+(?==\?[^?*\s]+(?:\*[^?\s]*)?\?[bBqQ]\?)")


def decode_words(raw: str) -> str:
    """The header's encoded words decoded by this module's charset rules; what is not one (8-bit
    text too) is taken as UTF-8, else Windows-1252. The stdlib's decoders raise on unknown charsets
    and bad base64, and a message whose header cannot be read must still be taken."""
    text = decoded(raw.encode("utf-8", errors="surrogateescape"), None)
    return ENCODED_WORD.sub(_decode_word, _BETWEEN_WORDS.sub("", text))


def _decode_word(word: re.Match[str]) -> str:
    charset, encoding, data = word.groups()
    try:
        if encoding in "bB":
            payload = base64.b64decode(data + "=" * (-len(data) % 4))
        else:
            payload = email.quoprimime.header_decode(data).encode("latin-1")
    except (binascii.Error, ValueError):  # not base64, or not ASCII: shown as it came
        return word.group()
    return decoded(payload, charset)
