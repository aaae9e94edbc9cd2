"""SMS separator and ellipsis chosen by the text sent, not the text given. Pure, no sockets."""

from __future__ import annotations

from channels.digests import DIGEST_LABEL
from channels.gsm import segment_info, shorten
from channels.sms import render_text
from tests.support import outbound_message

LINE = "db-1 disk usage at 99 percent, writes failing on /var/lib/postgresql. "


def test_cut_away_emoji_leaves_a_gsm7_text() -> None:
    """Its only non-GSM-7 character cut off, a text goes as GSM-7: ' - ', '...', ~450 characters."""
    text = render_text(outbound_message(1, body=LINE * 8 + "\U0001f525"), 3)
    info = segment_info(text)
    assert (info.encoding, info.segments) == ("GSM-7", 3)
    assert " - " in text and "..." in text
    assert len(text) > 400


def test_kept_emoji_keeps_the_em_dash_and_the_ellipsis() -> None:
    """A non-GSM-7 character kept: UCS-2 anyway, so ' — ' and '…' (one unit) are used."""
    text = render_text(outbound_message(1, body="\U0001f525 " + LINE * 8), 3)
    assert segment_info(text).encoding == "UCS-2"
    assert " \u2014 " in text and "\u2026" in text


def test_shorten_keeps_whichever_ellipsis_carries_more() -> None:
    """'...' once the cut drops the UCS-2 character; '…' when it is kept anyway."""
    cut_emoji = shorten("a" * 400 + "\U0001f525", 2, suffix=" [id]")
    assert cut_emoji.endswith("... [id]")
    assert segment_info(cut_emoji).encoding == "GSM-7"
    kept_emoji = shorten("\U0001f525" + "a" * 400, 2, suffix=" [id]")
    assert kept_emoji.endswith("\u2026 [id]")
    assert segment_info(kept_emoji).segments == 2


def test_digest_shortening_also_drops_to_gsm7() -> None:
    """A digest (sent as built, shortened by gsm.shorten) gains the same room."""
    digest = outbound_message(1, subject="3 alerts", body=LINE * 8 + "\u2014", labels={DIGEST_LABEL: "dg_1"})
    assert segment_info(render_text(digest, 3)).encoding == "GSM-7"
