"""How the provider's health reads: the cause of a transition and the ``why`` of an explanation.

Pure wording over :class:`~daemon.core.health.HealthSnapshot`; the tracker decides, this says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from daemon.core.flapping import WINDOW
from daemon.core.model import CheckResult, ProviderState

if TYPE_CHECKING:  # the tracker words its transitions here, so its module imports this one
    from daemon.core.health import HealthSnapshot, Thresholds


def transition_cause(
    prev: HealthSnapshot,
    s: HealthSnapshot,
    t: Thresholds,
    recent: Mapping[str, tuple[CheckResult, ...]],
    cause: str,
) -> str:
    """The cause of the change from ``prev`` to ``s``, given what the round or signal said."""
    if s.local != prev.local:
        what = "our network, not the provider: no failover" if s.local else "our network works again"
        return f"{what}; {cause}"
    if s.held != prev.held:
        if s.held:
            return (
                f"flapping: {s.flap.percent:.1f} % state change over the last {WINDOW} rounds "
                f"(above {t.flap.high:g} %): routing holds the outage side until it falls below "
                f"{t.flap.low:g} %; last: {cause}"
            )
        return f"flapping stopped: {s.flap.percent:.1f} % state change (below {t.flap.low:g} %); {cause}"
    if s.natural != prev.natural:
        return _natural_cause(s, t, cause)
    if s.credentials != prev.credentials:
        return _credentials_cause(s, prev.credentials, recent)
    return cause


def _credentials_cause(
    s: HealthSnapshot, before: tuple[str, ...], recent: Mapping[str, tuple[CheckResult, ...]]
) -> str:
    refused = [recent[name][-1] for name in s.credentials if name in recent]
    if refused:
        lines = "; ".join(f"{r.check}: {r.reason}" for r in refused)
        return f"credentials refused ({lines}): renew them; not an outage"
    return f"credentials accepted again by {', '.join(before)}"


def _natural_cause(s: HealthSnapshot, t: Thresholds, cause: str) -> str:
    if s.natural == ProviderState.OUTAGE and s.failures == t.failure:
        return f"{s.failures} failing rounds, no clean one between: {cause}"
    if s.natural == ProviderState.HEALTHY and s.successes == t.success:
        return f"{s.successes} clean rounds, no failing one between: {cause}"
    return cause


# --- explaining -------------------------------------------------------------------------------


def state_reasons(s: HealthSnapshot, t: Thresholds, waiting: str) -> list[str]:
    """Why the state is what it is; ``waiting`` names the checks a recovery waits for, if any."""
    why = []
    if s.forced:
        why.append(f"forced to {s.forced.value} by operator ({s.forced_reason}); evidence: {s.routing_state}")
    if s.local:
        why.append(
            f"unknown: provider checks and controls fail together (our network): routing stays {s.mode}"
        )
    if s.credentials:
        why.append(f"credentials refused by {', '.join(s.credentials)}: renew them; not an outage")
    if s.held:
        why.append(
            f"flapping: {s.flap.percent:.1f} % state change over the last {WINDOW} rounds: routing holds the "
            f"outage side until it falls below {t.flap.low:g} %"
        )
    why.append(_natural_line(s, t))
    if waiting:
        why.append(f"recovery waits for {waiting}")
    return why


def _natural_line(s: HealthSnapshot, t: Thresholds) -> str:
    lines = {
        ProviderState.HEALTHY: f"healthy: {s.successes} clean rounds since the last failing one",
        ProviderState.SUSPECT: f"suspect: {s.failures} of {t.failure} failing rounds for an outage",
        ProviderState.OUTAGE: f"outage: {s.failures} failing rounds (threshold {t.failure}); "
        f"recovery needs {t.success} clean rounds",
        ProviderState.RECOVERING: f"recovering: {s.successes} of {t.success} clean rounds for recovery",
    }
    if s.natural == ProviderState.RECOVERING and s.successes >= t.success:
        return (
            f"recovering: {s.successes} clean rounds, but the last {WINDOW} rounds still hold an earlier "
            "change: recovery waits until they hold none but its own (flap damping)"
        )
    return lines.get(s.natural, s.natural.value)
