"""Checks from every node (vantage points): each node's vote, and the quorum over them.

Every node runs the checks and stores its results under its name. A node's DOWN counts as a vote
that the provider is down only while its own network works: when its controls fail (as much
control weight as the policy needs to blame our network, the test a single node's assessment
makes), its failures say nothing about the provider and it abstains. The leader merges each
check's latest fresh result per node into the one its HealthTracker observes: down only when at
least ``nodes_quorum`` voting nodes see it down (:func:`merge`, :class:`Vantage`).

Controls merge differently. The tracker blames our network when the merged provider checks and
the merged controls are down together, but a merged provider DOWN now comes only from nodes
whose controls work, so a merged control DOWN is only true, and only harmless, when too few
nodes' networks work to make the quorum at all. The same merge, read back from the database, is
what a follower shows in its explain, with one line per node (:func:`outlook`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from daemon.core.assessment import Policy, Role, own_network_fails
from daemon.core.model import CheckResult, CheckStatus
from daemon.store.postgres import PostgresStore
from daemon.store.postgres_views import NodeView

#: per node, its latest fresh result per check
Views = Mapping[str, Sequence[CheckResult]]


@dataclass(frozen=True, slots=True)
class _Ballot:
    """One check's votes: every node's latest result for it, and what counts."""

    results: Mapping[str, CheckResult]
    #: nodes whose DOWN counts towards the quorum
    down: tuple[str, ...]
    #: nodes that see it down while their own controls fail (never for a control itself)
    abstain: tuple[str, ...]
    #: nodes whose own network works, whether or not they reported this check
    sound: int


def merge(own: CheckResult, views: Views, policy: Policy, quorum: int) -> CheckResult:
    """What ``own`` counts for, given every node's latest results (``own``'s node with ``own``)."""
    ballot = _ballot(own.check, views, policy)
    control = policy.of(own.check).role == Role.CONTROL
    tally = _tally(ballot, quorum, control)
    # a control is down for the cluster only when too few nodes can vote on the provider
    if len(ballot.down) >= quorum and not (control and ballot.sound >= quorum):
        counted = [ballot.results[n] for n in ballot.down]
        voted = own if own in counted else counted[0]
        return dataclasses.replace(_noted(voted, tally), at=own.at)
    if own.status != CheckStatus.DOWN:
        # working where the leader stands: say so, and who sees it otherwise
        return own if not (ballot.down or ballot.abstain) else _noted(own, tally)
    others = [r for _, r in sorted(ballot.results.items()) if r.status != CheckStatus.DOWN]
    if not others:
        # too few nodes vote to reach the quorum: the round counts neither way
        return dataclasses.replace(_noted(own, tally), status=CheckStatus.UNKNOWN)
    best = max(others, key=lambda r: r.at)
    return dataclasses.replace(_noted(best, tally), at=own.at)


def _noted(result: CheckResult, tally: str) -> CheckResult:
    return dataclasses.replace(result, reason=f"{result.reason} [{tally}]")


def _ballot(check: str, views: Views, policy: Policy) -> _Ballot:
    failing = {node for node, seen in views.items() if own_network_fails(seen, policy)}
    # a control's DOWN is what it reports, never an abstention
    abstains = set() if policy.of(check).role == Role.CONTROL else failing
    results = {node: r for node, seen in sorted(views.items()) for r in seen if r.check == check}
    down = [node for node, r in results.items() if r.status == CheckStatus.DOWN]
    return _Ballot(
        results=results,
        down=tuple(n for n in down if n not in abstains),
        abstain=tuple(n for n in down if n in abstains),
        sound=len(views) - len(failing),
    )


def _tally(ballot: _Ballot, quorum: int, control: bool) -> str:
    seen = f"{len(ballot.down)} of {len(ballot.results)} nodes see it down"
    if ballot.abstain:
        who, their = ", ".join(ballot.abstain), "its" if len(ballot.abstain) == 1 else "their"
        return (
            f"{seen} with their controls up (quorum {quorum}); {who} too, but with {their} "
            f"controls down ({their} own network): not counted"
        )
    if control and len(ballot.down) >= quorum and ballot.sound >= quorum:
        return f"{seen} (quorum {quorum}), but {ballot.sound} nodes' own networks work: enough to vote"
    return f"{seen} (quorum {quorum})"


class Vantage:
    """Merges the nodes' latest fresh results for a check into the one the leader observes."""

    def __init__(
        self, store: PostgresStore, quorum: int, fresh_s: float, policy: Callable[[], Policy]
    ) -> None:
        self._store = store
        self._quorum = quorum
        self._fresh = timedelta(seconds=fresh_s)
        self._policy = policy

    async def merge(self, own: CheckResult) -> CheckResult:
        # freshness is judged on the nodes' clocks (results carry their node's time): keep them
        # in NTP sync, or make vantage_fresh generous
        nodes = await self._store.nodes(own.at - self._fresh)
        views = {n.node: n.checks for n in nodes}
        mine = [r for r in views.get(self._store.node, ()) if r.check != own.check]
        views[self._store.node] = (*mine, own)
        return merge(own, views, self._policy(), self._quorum)


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
    views = {n.node: n.checks for n in nodes}
    checks = sorted({r.check for n in nodes for r in n.checks})
    merged = tuple(_as_leader_sees(check, views, leader, policy, quorum) for check in checks)
    return Outlook(leader, merged, tuple(_node_line(n, me, policy) for n in nodes))


def _as_leader_sees(check: str, views: Views, leader: str | None, policy: Policy, quorum: int) -> CheckResult:
    # the leader merges from its own result; without one (or without a leader), from the freshest
    seen = [r for results in views.values() for r in results if r.check == check]
    own = next((r for r in views.get(leader or "", ()) if r.check == check), None)
    return merge(own or max(seen, key=lambda r: r.at), views, policy, quorum)


def _node_line(node: NodeView, me: str, policy: Policy) -> str:
    who = f"node {node.node} ({node.role}{', this node' if node.node == me else ''})"
    if not node.checks:
        return f"{who}: no fresh check results"
    seen = "; ".join(f"{r.check} {r.status.value} ({r.reason})" for r in node.checks)
    return f"{who} sees the provider {_verdict(node.checks, policy)}: {seen}"


def _verdict(results: Sequence[CheckResult], policy: Policy) -> str:
    """The node's own reading, and whether its failures vote (as :func:`merge` counts them)."""
    down = [r for r in results if r.status == CheckStatus.DOWN]
    if own_network_fails(results, policy) and any(policy.of(r.check).role != Role.CONTROL for r in down):
        return "unknown (its checks and its controls fail together: its own network; it does not vote)"
    provider = sum(policy.of(r.check).weight for r in down if policy.of(r.check).role == Role.TRIGGER)
    return "down" if provider >= policy.quorum else "working"
