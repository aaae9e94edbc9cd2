"""The live status page (``GET /``): one self-contained HTML page, no external assets.

Provider state and why, a 24-hour timeline of checks and transitions drawn as inline SVG, queue
depths, per-channel health and the last drill, the last 50 notifications with their trail. It
refreshes itself every 10 seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any

from daemon.core.health import Transition
from daemon.core.model import CheckResult
from daemon.store.values import ChannelHealth, NotificationView, ProviderView, QueueView

WINDOW = timedelta(hours=24)
BUCKETS = 288  # five-minute columns
WIDTH, ROW, LABEL = 960, 22, 150
COLOURS = {
    "ok": "#2e7d32",
    "degraded": "#f9a825",
    "down": "#c62828",
    "unknown": "#9e9e9e",
    "credentials": "#6a1b9a",
    "healthy": "#2e7d32",
    "suspect": "#f9a825",
    "outage": "#c62828",
    "recovering": "#ef6c00",
    "flapping": "#ad1457",
}
#: worst first, for a bucket with several results
SEVERITY = ("down", "credentials", "degraded", "unknown", "ok")


@dataclass(frozen=True)
class PageData:
    provider_name: str
    provider: ProviderView
    events: Sequence[Transition]
    checks: Sequence[CheckResult]
    queue: QueueView
    channels: Sequence[ChannelHealth]
    drill: dict[str, Any] | None
    recent: Sequence[NotificationView]
    now: datetime
    #: the store could not be read: the provider as this process holds it, nothing else
    unread: bool = False


#: what the page shows for what only the store knows, while it cannot be read
UNREAD = "<p>Unknown: the store cannot be read (PostgreSQL unreachable?); see <code>/healthz</code>.</p>"


def render(data: PageData) -> str:
    state = data.provider.state.value
    why = data.provider.events[0].cause if data.provider.events else "no transition yet"
    return PAGE.format(
        state=escape(state.upper()),
        colour=COLOURS.get(state, "#555"),
        name=escape(data.provider_name),
        why=escape(why),
        since=_time(data.provider.snapshot.state_since),
        mode=escape(data.provider.mode),
        forced=_forced(data.provider),
        timeline=timeline(data.checks, data.events, data.now),
        queue=UNREAD if data.unread else _queue(data.queue),
        channels=UNREAD if data.unread else _channels(data.channels),
        drill="" if data.unread else _drill(data.drill),
        recent=UNREAD if data.unread else _recent(data.recent),
        now=_time(data.now),
    )


def timeline(checks: Sequence[CheckResult], events: Sequence[Transition], now: datetime) -> str:
    start = now - WINDOW
    names = sorted({c.check for c in checks})
    height = ROW * (len(names) + 1) + 20
    parts = [f'<svg viewBox="0 0 {WIDTH + LABEL} {height}" role="img" aria-label="24-hour timeline">']
    first = min([c.at for c in checks[:1]] + [e.at for e in events[:1]], default=now)
    parts += _state_band(events, max(start, first), start, now)
    for row, name in enumerate(names, start=1):
        y = row * ROW
        parts.append(f'<text x="0" y="{y + 14}">{escape(name)}</text>')
        for column, status in _buckets([c for c in checks if c.check == name], start).items():
            x = LABEL + column * WIDTH / BUCKETS
            parts.append(
                f'<rect class="check" x="{x:.1f}" y="{y}" width="{WIDTH / BUCKETS + 0.4:.1f}" '
                f'height="{ROW - 4}" '
                f'fill="{COLOURS[status]}"><title>{escape(name)}: {status}</title></rect>'
            )
    for hours in range(0, 24, 6):
        x = LABEL + WIDTH * hours / 24
        parts.append(f'<text x="{x:.0f}" y="{height - 4}" class="axis">-{24 - hours}h</text>')
    parts.append(f'<text x="{LABEL + WIDTH - 24}" y="{height - 4}" class="axis">now</text>')
    parts.append("</svg>")
    return "".join(parts)


def _buckets(results: Sequence[CheckResult], start: datetime) -> dict[int, str]:
    worst: dict[int, str] = {}
    for result in results:
        column = int((result.at - start) / WINDOW * BUCKETS)
        if 0 <= column < BUCKETS:
            current = worst.get(column, "ok")
            worst[column] = min(current, result.status.value, key=SEVERITY.index)
    return worst


def _state_band(
    events: Sequence[Transition], known_from: datetime, start: datetime, now: datetime
) -> list[str]:
    """The provider's state across the window (from when anything is known) as a band in the first row."""
    state = events[0].from_state.value if events else "healthy"
    at, parts = known_from, ['<text x="0" y="14">provider</text>']
    for event in [*events, None]:
        until = now if event is None else max(event.at, start)
        if state is not None and until > at:
            x = LABEL + (at - start) / WINDOW * WIDTH
            width = (until - at) / WINDOW * WIDTH
            parts.append(
                f'<rect class="state" x="{x:.1f}" y="0" width="{max(width, 1):.1f}" height="{ROW - 4}" '
                f'fill="{COLOURS[state]}"><title>{state}</title></rect>'
            )
        if event is not None:
            at, state = until, event.to_state.value
    return parts


def _forced(provider: ProviderView) -> str:
    forced = provider.snapshot.forced
    if forced is None:
        return ""
    reason = escape(provider.snapshot.forced_reason or "")
    return f'<p class="forced">Forced to {escape(forced.value)} by an operator: {reason}</p>'


def _queue(queue: QueueView) -> str:
    cells = "".join(
        f"<tr><td>{escape(status)}</td><td>{queue.notifications.get(status, 0)}</td></tr>"
        for status in ("pending", "held", "delivered", "failed")
    )
    return (
        f"<table><tr><th>notifications</th><th>count</th></tr>{cells}</table>"
        f"<p>Oldest waiting since {_time(queue.oldest_pending_at)}</p>"
    )


def _channels(channels: Sequence[ChannelHealth]) -> str:
    rows = "".join(
        f'<tr class="{"bad" if c.consecutive_failures else "good"}"><td>{escape(c.channel)}</td>'
        f"<td>{_time(c.last_success_at)}</td><td>{c.consecutive_failures}</td>"
        f"<td>{escape(c.last_error or '') if c.consecutive_failures else ''}</td></tr>"
        for c in channels
    )
    head = "<tr><th>channel</th><th>last success</th><th>failures in a row</th><th>last error</th></tr>"
    return f"<table>{head}{rows}</table>"


def _drill(drill: dict[str, Any] | None) -> str:
    if drill is None:
        return "<p>No drill has run yet. Run <code>backchannel drill</code>.</p>"
    verdict = "passed" if drill["ok"] else ("running" if not drill["done"] else "FAILED")
    rows = "".join(
        f"<li>{escape(c['channel'])}: {escape(c['status'])}"
        f"{': ' + escape(c['detail']) if c['detail'] else ''}</li>"
        for c in drill["channels"]
    )
    return f"<p>Last drill {escape(drill['drill'])}: <strong>{verdict}</strong></p><ul>{rows}</ul>"


def _recent(recent: Sequence[NotificationView]) -> str:
    rows = "".join(_notification_row(view) for view in recent)
    return (
        "<table><tr><th>accepted</th><th>severity</th><th>subject</th><th>status</th><th>trail</th></tr>"
        f"{rows}</table>"
    )


def _notification_row(view: NotificationView) -> str:
    n = view.notification
    trail = " → ".join(f"{escape(a.channel)}: {escape(a.outcome)}" for a in view.attempts) or "-"
    return (
        f"<tr><td>{_time(n.created_at)}</td>"
        f'<td class="sev-{escape(n.severity.value)}">{escape(n.severity.value)}</td>'
        f"<td>{escape(n.subject)}</td><td>{escape(view.status)}</td><td>{trail}</td></tr>"
    )


def _time(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>backchannel: {state}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
.state {{ display: inline-block; padding: .3em .8em; border-radius: 4px; color: #fff; font-weight: bold; }}
#provider h1 {{ font-size: 1.6em; margin: 0 0 .3em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ddd; padding: .2em .6em; text-align: left; }}
tr.bad td {{ background: #fdecea; }} .forced {{ color: #b71c1c; font-weight: bold; }}
svg {{ width: 100%; max-width: 1110px; font-size: 12px; }} .axis {{ fill: #666; }}
.sev-critical {{ color: #b71c1c; font-weight: bold; }} .sev-high {{ color: #e65100; }}
section {{ margin-bottom: 1.5em; }}
</style></head>
<body>
<section id="provider"><h1>{name}: <span class="state" style="background:{colour}">{state}</span></h1>
<p>Why: {why}</p><p>Since {since}; routing by the <strong>{mode}</strong> plans.</p>{forced}</section>
<section id="timeline"><h2>Last 24 hours</h2>{timeline}</section>
<section id="queue"><h2>Queue</h2>{queue}</section>
<section id="channels"><h2>Channels</h2>{channels}<h3>Drill</h3>{drill}</section>
<section id="recent"><h2>Last 50 notifications</h2>{recent}</section>
<footer>Rendered {now}. Refreshes every 10 seconds.</footer>
</body></html>
"""
