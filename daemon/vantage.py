"""Checks from every node (vantage points): merging their votes, and what each node sees.

Every node runs the checks and stores its results under its name. The leader merges each
check's latest fresh result per node into the one its HealthTracker observes: down only when at
least ``nodes_quorum`` nodes see it down (:class:`Vantage`). The same merge, read back from the
database, is what a follower shows in its explain, with one line per node (:func:`outlook`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from daemon.core.assessment import Policy, Role
from daemon.core.model import CheckResult, CheckStatus
from daemon.store.postgres import PostgresStore
from daemon.store.postgres_views import NodeView


def merge(own: CheckResult, votes: Mapping[str, CheckResult], quorum: int) -> CheckResult:
    """What ``own`` counts for, given every node's latest result for its check (``own``'s included)."""
    down = sorted(n for n, r in votes.items() if r.status == CheckStatus.DOWN)
    tally = f"{len(down)} of {len(votes)} nodes see it down (quorum {quorum})"
    if len(down) >= quorum:
        voted = own if own.status == CheckStatus.DOWN else votes[down[0]]
        return dataclasses.replace(voted, reason=f"{voted.reason} [{tally}]", at=own.at)
    if own.status != CheckStatus.DOWN:
        return own
    others = [r for n, r in sorted(votes.items()) if r.status != CheckStatus.DOWN]
    if not others:
        # too few nodes reported to reach the quorum: the round counts neither way
        return dataclasses.replace(own, status=CheckStatus.UNKNOWN, reason=f"{own.reason} [{tally}]")
    best = max(others, key=lambda r: r.at)
    return dataclasses.replace(best, reason=f"{best.reason} [{tally}]", at=own.at)


class Vantage:
    """Merges the nodes' latest fresh results for a check into the one the leader observes."""

    def __init__(self, store: PostgresStore, quorum: int, fresh_s: float) -> None:
        self._store = store
        self._quorum = quorum
        self._fresh = timedelta(seconds=fresh_s)

    async def merge(self, own: CheckResult) -> CheckResult:
        # freshness is judged on the nodes' clocks (results carry their node's time): keep them
        # in NTP sync, or make vantage_fresh generous
        votes = await self._store.vantage_latest(own.check, own.at - self._fresh)
        votes[self._store.node] = own
        return merge(own, votes, self._quorum)


@dataclass(frozen=True, slots=True)
class Outlook:
    """The multi-vantage view: each check as the leader counts it, and what each node sees."""

    leader: str | None
    #: per check, every node's latest result merged from the leader's side (sorted by check)
    checks: tuple[CheckResult, ...]
    #: one line per node: its role, its verdict, its latest result per check
    lines: tuple[str, ...]


def outlook(nodes: Sequence[NodeView], me: str, policy: Policy, quorum: int) -> Outlook:
    """What ``backchannel status`` explains on any node, from the nodes' stored latest results."""
    leader = next((n.node for n in nodes if n.role == "leader"), None)
    votes: dict[str, dict[str, CheckResult]] = {}
    for node in nodes:
        for result in node.checks:
            votes.setdefault(result.check, {})[node.node] = result
    merged = tuple(_as_leader_sees(by_node, leader, quorum) for _, by_node in sorted(votes.items()))
    return Outlook(leader, merged, tuple(_node_line(n, me, policy) for n in nodes))


def _as_leader_sees(by_node: Mapping[str, CheckResult], leader: str | None, quorum: int) -> CheckResult:
    # the leader merges from its own result; without one (or without a leader), from the freshest
    own = by_node.get(leader) if leader is not None else None
    return merge(own or max(by_node.values(), key=lambda r: r.at), by_node, quorum)


def _node_line(node: NodeView, me: str, policy: Policy) -> str:
    who = f"node {node.node} ({node.role}{', this node' if node.node == me else ''})"
    if not node.checks:
        return f"{who}: no fresh check results"
    seen = "; ".join(f"{r.check} {r.status.value} ({r.reason})" for r in node.checks)
    return f"{who} sees the provider {_verdict(node.checks, policy)}: {seen}"


def _verdict(results: Sequence[CheckResult], policy: Policy) -> str:
    """The node's own reading, as the tracker would make it of these results alone."""
    down = [r for r in results if r.status == CheckStatus.DOWN]
    provider = sum(policy.of(r.check).weight for r in down if policy.of(r.check).role == Role.TRIGGER)
    controls = sum(policy.of(r.check).weight for r in down if policy.of(r.check).role == Role.CONTROL)
    if provider >= policy.quorum and controls and controls >= policy.needed_controls:
        return "unknown (its checks and its controls fail together: its own network)"
    return "down" if provider >= policy.quorum else "working"
