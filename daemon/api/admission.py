"""What one process's HTTP listener admits: connections open at once, and bytes of request bodies
still arriving (``api.max_connections``, ``api.max_buffered_body_bytes``; docs/api.md,
"Connections and limits").

Without a cap a client that opens thousands of connections and sends nothing, or a body a few
bytes at a time (a slowloris), holds a descriptor for each and up to ``api.max_body_bytes`` of
buffered body, until the daemon runs out of descriptors or memory and the intake fails for
everyone. The timeouts bound how long one such connection lives; these bound how many live at once.

Of those connections, one address may hold at most ``api.max_connections_per_client`` (half by
default): a client that leaks connections, or opens them to shut others out, leaves room for
Alertmanager and the rest.

A connection past a cap is answered as it is accepted, before anything of it is read or parsed:
a ``503`` with ``Retry-After`` and ``Connection: close``, written in one send, then the socket is
closed. Costlier refusals do not fit (reading the request first keeps the descriptor until the
client sends it, which a slowloris never does), and cheaper ones help no sender: the kernel's
backlog (not accepting) holds a client until its connect times out, and one worker of several
that stopped accepting would still get its share of new connections from ``SO_REUSEPORT``.
Alertmanager's and Grafana's webhook senders retry a 5xx and a failed connection alike; the
503 says in their own logs why (``overloaded``, where a reset reads as a network fault), and an
HTTP client gets a status it knows, the same as for the daemon's other "try again later" answers
(draining, the store unavailable). A client still sending its request as the socket closes may
see a reset instead of the answer, and Go's HTTP client may take an answer that arrives before
its request for an unsolicited one; either is a failed call, retried as the 503 is.

A request body arriving while the process already holds ``max_buffered_body_bytes`` of bodies
not yet complete gets a ``503`` ``overloaded`` (``Retry-After``) and its connection is closed:
the body's bytes are counted as they arrive (a Content-Length is only a claim), and given back
when the body is complete or the connection is gone.

Refusals are counted (``backchannel_http_turned_away_total``) and logged at most once a minute
(``http.turned_away``, with how many so far).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from daemon.api.errors import RETRY_AFTER_S

log = logging.getLogger(__name__)

#: a process's listener: the API port, or an intake worker's
API, INTAKE = "api", "intake"
LISTENERS = (API, INTAKE)
#: which limit turned a client away: the ``api.*`` field's name
MAX_CONNECTIONS = "max_connections"
MAX_PER_CLIENT = "max_connections_per_client"
MAX_BUFFERED = "max_buffered_body_bytes"
LIMITS = (MAX_CONNECTIONS, MAX_PER_CLIENT, MAX_BUFFERED)
#: at most one warning a minute about clients turned away
TURNED_AWAY_LOG_S = 60.0

#: called with the limit's name for every connection or request it turned away
OnTurnedAway = Callable[[str], None]


class Overloaded(Exception):
    """A body arrived while the listener holds ``api.max_buffered_body_bytes`` of bodies."""


def _overloaded_body(message: str) -> dict[str, str]:
    return {"error": "overloaded", "message": message}


def _too_many(limit: int, field: str = MAX_CONNECTIONS, whose: str = "") -> bytes:
    message = f"{limit} connections already open{whose} (api.{field}); try again later"
    body = json.dumps(_overloaded_body(message)).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: {RETRY_AFTER_S}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class Admission:
    """One listener's limits: the connections it holds and the body bytes it buffers."""

    def __init__(
        self,
        listener: str,
        max_connections: int,
        max_buffered_bytes: int,
        on_turned_away: OnTurnedAway | None = None,
        *,
        max_per_client: int | None = None,
    ) -> None:
        self.listener = listener
        self.max_connections = max_connections
        self.max_per_client = max_per_client or max_connections
        self.max_buffered_bytes = max_buffered_bytes
        #: connections admitted and still open, by the client's address
        self.by_client: dict[str, int] = {}
        #: bytes of request bodies not yet complete, held by this listener's connections
        self.buffered = 0
        self.turned_away = 0
        self._on_turned_away = on_turned_away
        self._too_many = _too_many(max_connections)
        self._too_many_here = _too_many(self.max_per_client, MAX_PER_CLIENT, " from this address")
        self._warned_at = float("-inf")

    def admit(self, transport: asyncio.Transport, open_now: int) -> bool:
        """Whether a connection just accepted may join the ``open_now`` already open; if not, it
        has had its 503 and is closing. One admitted is given back with :meth:`left`."""
        client = _client(transport)
        held = self.by_client.get(client, 0)
        if open_now < self.max_connections and held < self.max_per_client:
            self.by_client[client] = held + 1
            return True
        over = open_now >= self.max_connections
        transport.write(self._too_many if over else self._too_many_here)  # one send: the buffer is empty
        transport.close()
        self._turn_away(MAX_CONNECTIONS if over else MAX_PER_CLIENT)
        return False

    def left(self, transport: asyncio.BaseTransport) -> None:
        """A connection :meth:`admit` admitted has closed."""
        client = _client(transport)
        held = self.by_client.get(client, 0) - 1
        if held > 0:
            self.by_client[client] = held
        else:
            self.by_client.pop(client, None)

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes of a body still arriving; False (nothing counted) past the limit."""
        if self.buffered + size > self.max_buffered_bytes:
            self._turn_away(MAX_BUFFERED)
            return False
        self.buffered += size
        return True

    def give(self, size: int) -> None:
        """Bytes counted by :meth:`take` whose body is complete, refused, or gone with its connection."""
        self.buffered -= size

    def overloaded(self) -> tuple[int, dict[str, str], dict[str, str]]:
        """The answer to a request whose body :meth:`take` refused: status, JSON body, headers."""
        message = (
            f"more than {self.max_buffered_bytes} bytes of request bodies arriving at once "
            "(api.max_buffered_body_bytes); try again later"
        )
        return 503, _overloaded_body(message), {"Retry-After": RETRY_AFTER_S}

    def _turn_away(self, limit: str) -> None:
        self.turned_away += 1
        if self._on_turned_away is not None:
            self._on_turned_away(limit)
        now = time.monotonic()
        if now - self._warned_at < TURNED_AWAY_LOG_S:
            return
        self._warned_at = now
        fields = {"event": "http.turned_away", "listener": self.listener, "limit": limit}
        log.warning(
            "HTTP clients turned away with 503 on the %s port: %d so far (%s; max_connections %d, "
            "max_connections_per_client %d, max_buffered_body_bytes %d)",
            self.listener,
            self.turned_away,
            limit,
            self.max_connections,
            self.max_per_client,
            self.max_buffered_bytes,
            extra={**fields, "count": self.turned_away},
        )


def _client(transport: asyncio.BaseTransport) -> str:
    """The client's address (its host: one client's connections come from many ports)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""
