"""Merging the nodes' votes: a node whose own controls fail abstains; the quorum counts the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.core.assessment import CheckPolicy, Policy, Role, Verdict, assess, own_network_fails
from daemon.core.model import CheckResult, CheckStatus
from daemon.store.postgres_views import NodeView
from daemon.vantage import Views, merge, outlook

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OK, DOWN, UNKNOWN = CheckStatus.OK, CheckStatus.DOWN, CheckStatus.UNKNOWN
POLICY = Policy({"smtp": CheckPolicy(), "control": CheckPolicy(Role.CONTROL)})


def res(check: str, status: CheckStatus, seconds: float = 0.0, reason: str = "") -> CheckResult:
    return CheckResult(
        check, status, reason or f"{check} {status.value}", 0.01, T0 + timedelta(seconds=seconds)
    )


def node(smtp: CheckStatus, control: CheckStatus, seconds: float = 0.0) -> tuple[CheckResult, ...]:
    return (res("smtp", smtp, seconds, f"smtp {smtp.value}"), res("control", control, seconds))


def own(views: Views, name: str, check: str) -> CheckResult:
    return next(r for r in views[name] if r.check == check)


def test_node_whose_controls_fail_does_not_vote() -> None:
    """A: provider and control down, B: provider down (control up), C fine, quorum 2: no outage."""
    views = {"a": node(DOWN, DOWN), "b": node(DOWN, OK), "c": node(OK, OK)}
    for leader in views:
        smtp = merge(own(views, leader, "smtp"), views, POLICY, 2)
        control = merge(own(views, leader, "control"), views, POLICY, 2)
        assert smtp.status == OK, (leader, smtp)
        assert control.status == OK, (leader, control)
    told = merge(own(views, "c", "smtp"), views, POLICY, 2).reason
    assert "1 of 3 nodes see it down with their controls up (quorum 2)" in told
    assert "a too, but with its controls down (its own network): not counted" in told


def test_two_nodes_with_controls_up_declare_it() -> None:
    """B and C see the provider down with their controls up: down, whoever leads, A's view aside."""
    views = {"a": node(DOWN, DOWN), "b": node(DOWN, OK), "c": node(DOWN, OK)}
    for leader in views:
        smtp = merge(own(views, leader, "smtp"), views, POLICY, 2)
        assert smtp.status == DOWN, (leader, smtp)
        assert "2 of 3 nodes see it down with their controls up (quorum 2)" in smtp.reason
        assert merge(own(views, leader, "control"), views, POLICY, 2).status != DOWN
    counted = merge(own(views, "a", "smtp"), views, POLICY, 2)
    assert counted.reason.startswith("smtp down"), "the reason is a counted node's, not a's"


def test_plain_tally_when_every_down_node_votes() -> None:
    """Two of three down with controls up, none abstaining: the tally reads as before."""
    views = {"a": node(OK, OK), "b": node(DOWN, OK), "c": node(DOWN, OK)}
    smtp = merge(own(views, "a", "smtp"), views, POLICY, 2)
    assert smtp.status == DOWN and smtp.reason.endswith("[2 of 3 nodes see it down (quorum 2)]")
    assert smtp.at == own(views, "a", "smtp").at, "the merged result is the leader's round"


def test_leader_alone_with_its_network_down_reads_the_others() -> None:
    """The leader's own provider and control down, the others fine: the freshest working result."""
    views = {"a": node(DOWN, DOWN, 5), "b": node(OK, OK, 1), "c": node(OK, OK, 2)}
    smtp = merge(own(views, "a", "smtp"), views, POLICY, 2)
    assert smtp.status == OK and smtp.at == T0 + timedelta(seconds=5)
    assert "0 of 3 nodes see it down with their controls up" in smtp.reason


def test_votes_too_few_for_the_quorum_count_neither_way() -> None:
    """Every node that reported sees it down, but only one votes: unknown, not up."""
    views = {"a": node(DOWN, DOWN), "b": node(DOWN, OK)}
    assert merge(own(views, "b", "smtp"), views, POLICY, 2).status == UNKNOWN


def test_controls_down_on_a_quorum_do_not_veto_sound_nodes() -> None:
    """Four nodes, quorum 2: two with their network down, two seeing the provider down: failing."""
    views = {"a": node(DOWN, DOWN), "b": node(DOWN, DOWN), "c": node(DOWN, OK), "d": node(DOWN, OK)}
    smtp = merge(own(views, "a", "smtp"), views, POLICY, 2)
    control = merge(own(views, "a", "control"), views, POLICY, 2)
    assert smtp.status == DOWN and control.status != DOWN
    assert "but 2 nodes' own networks work: enough to vote" in control.reason
    latest = {"smtp": smtp, "control": control}
    assert assess(POLICY, latest, smtp, T0).verdict == Verdict.FAILING


def test_control_down_when_too_few_networks_work() -> None:
    """Two of three nodes' controls down: fewer than the quorum can vote, so the control is down."""
    views = {"a": node(DOWN, DOWN), "b": node(DOWN, DOWN), "c": node(OK, OK)}
    control = merge(own(views, "c", "control"), views, POLICY, 2)
    assert control.status == DOWN and "2 of 3 nodes see it down (quorum 2)" in control.reason
    assert merge(own(views, "c", "smtp"), views, POLICY, 2).status == OK


def test_one_failing_control_of_two_keeps_the_vote() -> None:
    """Two controls, both needed to blame the network: a node with one down still votes."""
    policy = Policy(
        {"smtp": CheckPolicy(), "ctl-a": CheckPolicy(Role.CONTROL), "ctl-b": CheckPolicy(Role.CONTROL)}
    )
    half = (res("smtp", DOWN), res("ctl-a", DOWN), res("ctl-b", OK))
    assert not own_network_fails(half, policy)
    assert own_network_fails((*half[:2], res("ctl-b", DOWN)), policy)
    views = {"a": half, "b": half, "c": (res("smtp", OK), res("ctl-a", OK), res("ctl-b", OK))}
    assert merge(own(views, "c", "smtp"), views, policy, 2).status == DOWN


def test_without_controls_every_down_votes() -> None:
    """A policy with no controls: nobody abstains, the quorum counts each node's DOWN."""
    policy = Policy({"smtp": CheckPolicy()})
    views = {"a": (res("smtp", DOWN),), "b": (res("smtp", DOWN),), "c": (res("smtp", OK),)}
    assert merge(own(views, "c", "smtp"), views, policy, 2).status == DOWN


def test_outlook_says_which_nodes_vote() -> None:
    """Each node's line: down with controls up votes; down with controls down is unknown, no vote."""
    nodes = [
        NodeView("a", "leader", node(DOWN, DOWN)),
        NodeView("b", "follower", node(DOWN, OK)),
        NodeView("c", "follower", node(OK, OK)),
    ]
    seen = outlook(nodes, "b", POLICY, 2)
    assert seen.leader == "a"
    assert [r.check for r in seen.checks] == ["control", "smtp"]
    assert all(r.status == OK for r in seen.checks), seen.checks
    lines = "\n".join(seen.lines)
    assert "node a (leader) sees the provider unknown (its checks and its controls fail together" in lines
    assert "its own network; it does not vote)" in lines
    assert "node b (follower, this node) sees the provider down" in lines
    assert "node c (follower) sees the provider working" in lines
