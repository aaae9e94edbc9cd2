"""Three `backchannel run` processes on one PostgreSQL: shared work, leader failover, fencing.

Checked like the kill -9 test: every acknowledged notification is delivered at least once and
nothing unsubmitted is; duplicates (a node killed mid-send) are counted and reported.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import CONFIG, TOKEN, WEBHOOK_ONLY_ROUTES, DaemonProcess, until
from tests.integration.conftest import admin, postgres_server, postgres_url
from tests.servers import SmtpServer, WebhookReceiver

__all__ = ["postgres_server", "postgres_url"]  # fixtures, used by name

TOTAL = 3000
BATCH = 25
LEASE_S = 2.0
CLAIM_LEASE_S = 5


class HaNode(DaemonProcess):
    """A daemon whose store is the shared PostgreSQL schema, under a node name of its own.

    ``store_extra`` adds store settings (``, nodes_quorum: 2``); ``edits`` replaces text in
    the harness's YAML (its check list, its thresholds).
    """

    def __init__(
        self,
        workdir: Path,
        url: str,
        node: str,
        *,
        store_extra: str = "",
        edits: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.store_line = (
            f'store: {{url: "{url}", node: {node}, leader_lease: {LEASE_S}s, pool_size: 4{store_extra}}}'
        )
        self.node = node
        self.edits = dict(edits or {})
        workdir.mkdir()
        super().__init__(workdir, **kwargs)

    def write_config(self, routes: str) -> None:
        text = CONFIG.format(routes=routes, **self._settings)
        text = text.replace(f"store: {{path: {self._settings['store']}}}", self.store_line)
        # a dead node's claims are taken over after the claim lease: short here, 5 min by default
        text = text.replace(
            "dispatch:\n  poll: 200ms\n", f"dispatch:\n  poll: 200ms\n  lease: {CLAIM_LEASE_S}s\n"
        )
        for old, new in self.edits.items():
            assert old in text, f"{old!r} is not in the harness's configuration"
            text = text.replace(old, new)
        self.config_path.write_text(text)

    def events(self, offset: int = 0) -> list[dict[str, Any]]:
        """The structured log's lines (JSON: stdout is not a terminal) from byte ``offset`` on."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[tuple[list[HaNode], WebhookReceiver, str]]:
    """Three started nodes, webhook-only routes, one shared schema."""
    suffix = uuid.uuid4().hex[:6]
    with ExitStack() as stack:
        smtp = stack.enter_context(SmtpServer())
        hook = stack.enter_context(WebhookReceiver())
        nodes = [
            HaNode(
                tmp_path / f"n{i}",
                postgres_url,
                f"n{i}-{suffix}",
                smtp_port=smtp.port,
                hook_url=hook.url,
                routes=WEBHOOK_ONLY_ROUTES,
                every="500ms",
            )
            for i in range(3)
        ]
        for node in nodes:
            stack.callback(node.close)
        nodes[0].start()  # the migrations run once, then the others join
        for node in nodes[1:]:
            node.start()
        yield nodes, hook, postgres_url


def leader_row(url: str) -> tuple[str | None, int]:
    """The node holding an unexpired lease (None if none) and the lease version."""
    with admin(url) as conn:
        row = conn.execute(
            "SELECT CASE WHEN expires_at > now() THEN node END, version FROM leader"
        ).fetchone()
    assert row is not None
    return row[0], row[1]  # type: ignore[return-value]


class Producer:
    """Posts batches to the nodes in turn; a batch a dead node refuses goes to the next node."""

    def __init__(self, nodes: list[HaNode]) -> None:
        self.urls = [f"http://127.0.0.1:{n.api_port}/v1/notifications" for n in nodes]
        self.acked: set[str] = set()
        self.lock = threading.Lock()

    def run(self, keys: list[str], threads: int = 3) -> None:
        chunks = [keys[i : i + BATCH] for i in range(0, len(keys), BATCH)]
        workers = [threading.Thread(target=self._post, args=(chunks[n::threads], n)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _post(self, chunks: list[list[str]], start: int) -> None:
        turn = itertools.cycle(range(start, start + len(self.urls)))
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
            for chunk in chunks:
                body = [{"severity": "critical", "subject": key, "idempotency_key": key} for key in chunk]
                for _ in range(2 * len(self.urls)):
                    try:
                        response = client.post(self.urls[next(turn) % len(self.urls)], json=body)
                    except httpx.TransportError:
                        continue  # that node is dead: the next one takes the batch
                    if response.status_code == 202:
                        with self.lock:
                            self.acked.update(chunk)
                        break


def test_three_nodes_share_work_and_survive_leader_kill(
    cluster: tuple[list[HaNode], WebhookReceiver, str],
) -> None:
    """3,000 notifications over three nodes, the leader killed mid-burst: all delivered, new leader fast."""
    nodes, hook, url = cluster
    first, _ = until(lambda: leader_row(url)[0] and leader_row(url), 10, "a leader")
    keys = [f"ha-{i:05d}" for i in range(TOTAL)]
    producer = Producer(nodes)
    burst = threading.Thread(target=producer.run, args=(keys,))
    burst.start()
    until(lambda: len(producer.acked) >= TOTAL // 3 or not burst.is_alive(), 60, "a third acknowledged")
    victim = next(n for n in nodes if n.node == first)
    victim.kill()
    killed_at = time.monotonic()
    successor, _ = until(
        lambda: (row := leader_row(url))[0] not in (None, first) and row, LEASE_S + 5, "successor"
    )
    failover_s = time.monotonic() - killed_at
    burst.join()
    producer.run([k for k in keys if k not in producer.acked])
    assert producer.acked == set(keys)
    delivered = _await_deliveries(hook, producer.acked, url, 90)
    duplicates = sum(delivered.values()) - len(delivered)
    print(f"failover {failover_s:.2f}s to {successor}; {len(delivered)} delivered, {duplicates} duplicates")
    assert set(delivered) <= set(keys), "delivered something never submitted"
    assert failover_s <= LEASE_S + 2, f"a new leader took {failover_s:.2f}s (lease {LEASE_S}s)"
    # /metrics says who decides: the successor alone (alerts: no leader, two leaders)
    alive = [n for n in nodes if n is not victim]
    leaders = until(lambda: (led := _leading(alive)) == [successor] and led, 10, "backchannel_leader")
    assert leaders == [successor]


def _leading(nodes: list[HaNode]) -> list[str]:
    """The nodes whose /metrics report backchannel_leader 1."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    found = []
    for node in nodes:
        text = httpx.get(f"http://127.0.0.1:{node.api_port}/metrics", headers=headers, timeout=5).text
        if "\nbackchannel_leader 1.0\n" in text:
            found.append(node.node)
    return found


def test_paused_leader_does_not_act_on_stale_leadership(
    cluster: tuple[list[HaNode], WebhookReceiver, str],
) -> None:
    """SIGSTOP the leader past its lease, SIGCONT: its stale token is refused; it wrote nothing since."""
    nodes, _, url = cluster
    _audit_provider_writes(url)
    first, version = until(lambda: leader_row(url)[0] and leader_row(url), 10, "a leader")
    paused = next(n for n in nodes if n.node == first)
    assert paused.proc is not None
    until(lambda: _writes_by(url, first), 10, "the leader's provider writes in the audit")
    offset = paused.log_path.stat().st_size
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        successor, taken = until(
            lambda: (row := leader_row(url))[0] not in (None, first) and row, LEASE_S + 5, "successor"
        )
        # queued in the kernel while it is stopped: a write it is asked for the moment it resumes
        override = _queue_request(
            paused.api_port, "/v1/provider/override", {"state": "outage", "reason": "x"}
        )
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    refused = _status_of(override)
    assert refused >= 400, "the resumed old leader accepted an override"
    until(lambda: _named(paused.events(offset), "leader.deposed"), 10, "the paused leader stepping down")
    resumed = paused.events(offset)
    # the evidence: one write with the stale token (a lease renewal or a provider write) refused
    (fenced,) = _named(resumed, "leader.fenced")
    (deposed,) = _named(resumed, "leader.deposed")
    assert (fenced["node"], fenced["version"], deposed["version"]) == (first, version, version)
    assert fenced["write"] in ("lease", "provider")
    print(f"resumed old leader: its {fenced['write']} write refused (version {version}), override {refused}")
    assert not _named(resumed, "leader.elected", "provider.transition"), "the old leader acted again"
    until(lambda: _writes_by(url, successor), 10, "the successor's provider writes in the audit")
    assert set(_writes_by(url, first)) == {version}, "the old leader wrote under another node's lease"
    assert set(_writes_by(url, successor)) == {taken}
    assert leader_row(url) == (successor, taken), "the old leader did not take the lease back"
    status = paused.status()
    assert status["provider"]["forced"] is None
    assert status["provider"]["state"] == nodes[[n.node for n in nodes].index(successor)].provider_state()


def test_a_second_process_under_a_nodes_name_exits_78_and_a_killed_one_restarts(
    tmp_path: Path, postgres_url: str
) -> None:
    """A configuration copied to a second host, name and all: that daemon refuses to start (78, no
    restart by systemd) and the running one goes on; the running one killed with -9 and started
    again at once takes its name back."""
    name = f"copied-{uuid.uuid4().hex[:6]}"
    with SmtpServer() as smtp, WebhookReceiver() as hook, ExitStack() as stack:
        nodes = [
            HaNode(
                tmp_path / f"n{i}",
                postgres_url,
                name,
                smtp_port=smtp.port,
                hook_url=hook.url,
                routes=WEBHOOK_ONLY_ROUTES,
            )
            for i in range(2)
        ]
        for node in nodes:
            stack.callback(node.close)
        running, copy = nodes
        running.start()
        copy.start(wait=False)
        assert copy.proc is not None
        assert copy.proc.wait(30) == 78
        assert f"another process is running as node '{name}'" in copy.log_path.read_text()
        assert running.status()["provider"]["state"] == "healthy"
        running.kill()
        running.start()  # within the readiness deadline: the name of a dead process is taken at once
        assert not _named(running.events(), "node.name_taken")


def _audit_provider_writes(url: str) -> None:
    """Record every committed write to the provider state with its connection and the lease then.

    Each node's connections are named ``backchannel <node>`` (``application_name``). A fenced
    write that updates no row fires no row trigger, and its transaction rolls back anyway.
    """
    with admin(url) as conn:
        conn.execute(
            """
            CREATE TABLE provider_audit (id bigserial PRIMARY KEY, app text NOT NULL, lease_version bigint);
            CREATE FUNCTION provider_audit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO provider_audit (app, lease_version)
                SELECT current_setting('application_name'), version FROM leader WHERE id = 1;
                RETURN NULL;
            END $$;
            CREATE TRIGGER provider_audit AFTER UPDATE ON provider
                FOR EACH ROW EXECUTE FUNCTION provider_audit();
            CREATE TRIGGER provider_events_audit AFTER INSERT ON provider_events
                FOR EACH ROW EXECUTE FUNCTION provider_audit();
            """
        )


def _writes_by(url: str, node: str) -> list[int]:
    """The lease version in force at each provider write a node committed."""
    with admin(url) as conn:
        found = conn.execute(
            "SELECT lease_version FROM provider_audit WHERE app = %s ORDER BY id", (f"backchannel {node}",)
        ).fetchall()
    return [int(row[0]) for row in found]  # type: ignore[call-overload]


def _named(events: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] in names]


def _queue_request(port: int, path: str, body: Mapping[str, Any]) -> socket.socket:
    """Send a request over a raw socket (the kernel queues it even for a stopped process)."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(head.encode() + payload)
    return sock


def _status_of(sock: socket.socket) -> int:
    """The HTTP status code of the answer on ``sock``."""
    with sock:
        data = b""
        while b"\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
    return int(data.split(b" ", 2)[1])


def _await_deliveries(hook: WebhookReceiver, expected: set[str], url: str, deadline_s: float) -> Counter[str]:
    """Every expected subject received at least once; parses each request once (polling is cheap)."""
    delivered: Counter[str] = Counter()
    seen = 0
    deadline = time.monotonic() + deadline_s
    while True:
        requests = hook.requests
        delivered.update(r.json()["subject"] for r in requests[seen:])
        seen = len(requests)
        if set(delivered) >= expected:
            return delivered
        if time.monotonic() > deadline:
            with admin(url) as conn:
                states = conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall()
            missing = len(expected - set(delivered))
            raise AssertionError(
                f"{missing} not delivered within {deadline_s}s; deliveries by state: {states}"
            )
        time.sleep(0.25)
