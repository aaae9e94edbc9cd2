"""The Google Workspace status dashboard check: active incidents for one product (Gmail by default).

``incidents.json`` (https://www.google.com/appsstatus/dashboard/incidents.json, described at
https://support.google.com/a/answer/10120161) is a flat array of every recent incident; one is
active while its ``end`` is null or absent. An incident concerns the product when its
``service_name`` or one of its ``affected_products`` titles is the product (any case). Its
current impact is the latest update's ``status``, else its ``status_impact``:

=====================================  ===========
worst impact among active incidents    status
=====================================  ===========
SERVICE_OUTAGE                         DOWN
SERVICE_DISRUPTION                     DEGRADED
SERVICE_INFORMATION, AVAILABLE, none   OK
anything else                          UNKNOWN
=====================================  ===========
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

import httpx

from daemon.checks._http import (
    ConfigError,
    HttpStatusCheck,
    Verdict,
    as_dict,
    as_list,
    checked_url,
    fetch_json,
    one_line,
    utc_now,
    worst,
)
from daemon.core.model import CheckStatus

DEFAULT_URL = "https://www.google.com/appsstatus/dashboard/incidents.json"

IMPACTS = {
    "SERVICE_OUTAGE": CheckStatus.DOWN,
    "SERVICE_DISRUPTION": CheckStatus.DEGRADED,
    "SERVICE_INFORMATION": CheckStatus.OK,
    "AVAILABLE": CheckStatus.OK,
}


class GoogleWorkspaceCheck(HttpStatusCheck):
    def __init__(
        self,
        name: str,
        *,
        url: str = DEFAULT_URL,
        product: str = "Gmail",
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not product.strip():
            raise ConfigError(f"check {name}: empty product")
        self.url = checked_url(url, f"check {name}: url")
        self.product = product
        super().__init__(name, timeout_s=timeout_s, client=client, clock=clock, monotonic=monotonic)

    async def verdict(self) -> Verdict:
        incidents = await fetch_json(self.client, self.url, timeout_s=self.timeout_s)
        return incidents_verdict(incidents, self.product)


def incidents_verdict(incidents: object, product: str) -> Verdict:
    """The verdict of one ``incidents.json`` document for ``product``."""
    active = [
        incident
        for incident in (as_dict(i, "incidents.json[]") for i in as_list(incidents, "incidents.json"))
        if incident.get("end") is None and _concerns(incident, product)
    ]
    if not active:
        return CheckStatus.OK, f"{product}: no active incident"
    impacts = [(_impact(incident), incident) for incident in active]
    status = worst(IMPACTS.get(impact, CheckStatus.UNKNOWN) for impact, _ in impacts)
    described = "; ".join(f"{impact}: {_summary(incident)}" for impact, incident in impacts)
    return status, f"{product}: {len(active)} active incident(s): {described}"


def _concerns(incident: Mapping[str, object], product: str) -> bool:
    wanted = product.casefold()
    names = [incident.get("service_name")]
    products = incident.get("affected_products")
    if isinstance(products, list):
        names += [p.get("title") for p in products if isinstance(p, dict)]
    return any(isinstance(n, str) and n.casefold() == wanted for n in names)


def _impact(incident: Mapping[str, object]) -> str:
    latest = incident.get("most_recent_update")
    impact = latest.get("status") if isinstance(latest, dict) else None
    if not isinstance(impact, str):
        impact = incident.get("status_impact")
    # an undocumented or missing impact is UNKNOWN for this incident; a worse one elsewhere still wins
    return impact.upper() if isinstance(impact, str) and impact else "NO_STATUS"


def _summary(incident: Mapping[str, object]) -> str:
    """The latest update's text, else the description: Markdown such as ``**Summary**\nUsers ...``."""
    latest = incident.get("most_recent_update")
    text = latest.get("text") if isinstance(latest, dict) else None
    if not isinstance(text, str) or not text.strip():
        text = incident.get("external_desc")
    if not isinstance(text, str):
        return str(incident.get("id", "?"))
    lines = [line.strip() for line in text.replace("*", "").splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].lower() == "summary":
        lines = lines[1:]
    return one_line(" ".join(lines), 120)
