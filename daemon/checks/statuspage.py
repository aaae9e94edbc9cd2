"""The Atlassian Statuspage check: a vendor's public ``/api/v2/summary.json``.

SendGrid, Mailgun, SparkPost, Mailjet and Twilio publish their status there. The page's overall
indicator answers when no component is named; named components (by name or id, any case)
narrow it to what the daemon uses, and the worst of them answers. Values, from
https://developer.statuspage.io/ (the public ``summary.json`` shapes):

================================  ===========
indicator / component status      status
================================  ===========
none / operational                OK
minor / degraded_performance      DEGRADED
under_maintenance                 DEGRADED
major / partial_outage            DOWN
critical / major_outage           DOWN
anything else, or a missing name  UNKNOWN
================================  ===========

``partial_outage`` is DOWN because Statuspage itself rolls it up into the ``major`` indicator
("Partial System Outage"). Vendor pages lag real outages: the health policy treats this check
as corroboration, not as a trigger.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import httpx

from daemon.checks._http import (
    ConfigError,
    HttpStatusCheck,
    StatusError,
    Verdict,
    as_dict,
    as_list,
    as_str,
    checked_url,
    fetch_json,
    utc_now,
    worst,
)
from daemon.core.model import CheckStatus

SUMMARY_PATH = "/api/v2/summary.json"

INDICATORS = {
    "none": CheckStatus.OK,
    "minor": CheckStatus.DEGRADED,
    "major": CheckStatus.DOWN,
    "critical": CheckStatus.DOWN,
}
COMPONENT_STATUSES = {
    "operational": CheckStatus.OK,
    "degraded_performance": CheckStatus.DEGRADED,
    "under_maintenance": CheckStatus.DEGRADED,
    "partial_outage": CheckStatus.DOWN,
    "major_outage": CheckStatus.DOWN,
}


def summary_url(url: str) -> str:
    """The page's base URL gets the summary path; a URL already ending in ``.json`` is used as is."""
    url = checked_url(url, "statuspage url")
    return url if url.split("?", 1)[0].endswith(".json") else url.rstrip("/") + SUMMARY_PATH


class StatuspageCheck(HttpStatusCheck):
    def __init__(
        self,
        name: str,
        url: str,
        *,
        components: Sequence[str] = (),
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if any(not c.strip() for c in components):
            raise ConfigError(f"check {name}: empty component name")
        self.url = summary_url(url)
        self.components = tuple(components)
        super().__init__(name, timeout_s=timeout_s, client=client, clock=clock, monotonic=monotonic)

    async def verdict(self) -> Verdict:
        summary = await fetch_json(self.client, self.url, timeout_s=self.timeout_s)
        return summary_verdict(summary, self.components)


def summary_verdict(summary: object, components: Sequence[str] = ()) -> Verdict:
    """The verdict of one ``summary.json`` document, overall or for the named components."""
    doc = as_dict(summary, "summary.json")
    page = _page_name(doc)
    if components:
        return _components_verdict(page, doc, components)
    status = as_dict(doc.get("status"), "summary.json status")
    indicator = as_str(status.get("indicator"), "summary.json status.indicator")
    verdict = INDICATORS.get(indicator.lower())
    if verdict is None:
        raise StatusError(f"{page}: unknown indicator {indicator!r}")
    description = status.get("description")
    detail = f" ({description})" if isinstance(description, str) and description else ""
    return verdict, f"{page}: indicator {indicator}{detail}{_incidents(doc)}"


def _components_verdict(page: str, doc: Mapping[str, object], wanted: Sequence[str]) -> Verdict:
    listed = [as_dict(c, "summary.json components[]") for c in as_list(doc.get("components"), "components")]
    by_key: dict[str, Mapping[str, object]] = {}
    for component in listed:
        for key in ("id", "name"):
            if isinstance(value := component.get(key), str):
                by_key.setdefault(value.casefold(), component)
    parts: list[tuple[CheckStatus, str]] = []
    for name in wanted:
        found = by_key.get(name.casefold())
        if found is None:
            parts.append((CheckStatus.UNKNOWN, f"{name}: not on the page"))
            continue
        value = as_str(found.get("status"), f"component {name} status")
        parts.append((COMPONENT_STATUSES.get(value.lower(), CheckStatus.UNKNOWN), f"{name}: {value}"))
    status = worst(s for s, _ in parts)
    return status, f"{page}: " + ", ".join(text for _, text in parts) + _incidents(doc)


def _page_name(doc: Mapping[str, object]) -> str:
    page = doc.get("page")
    name = page.get("name") if isinstance(page, dict) else None
    return name if isinstance(name, str) and name else "statuspage"


def _incidents(doc: Mapping[str, object]) -> str:
    """Open incidents' names, for the reason only: the statuses above decide."""
    incidents = doc.get("incidents")
    if not isinstance(incidents, list):
        return ""
    names = [
        f"{i['name']} ({i.get('status', '?')})"
        for i in incidents
        if isinstance(i, dict) and isinstance(i.get("name"), str)
    ]
    return f"; open incidents: {'; '.join(names)}" if names else ""
