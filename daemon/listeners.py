"""Closing listening servers without dropping a connection accepted at that moment.

asyncio's selector loop builds an accepted connection's transport in a task of its own, one loop
turn after the accept. A server closed in between makes that task fail (``Server._attach``
asserts, Python 3.11) and asyncio drops the connection silently with its socket open: the client
waits, unanswered, until its own timeout. Closed in the order below, such a connection is served
like any other open at the stop (the SMTP intake's 421, the HTTP intake's close). uvloop, which
``backchannel run`` prefers, builds the transport at the accept; the order does no harm there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

#: loop turns for the connections just accepted to get their transports and protocols
_SETTLE_TURNS = 3


async def close_servers(servers: Iterable[asyncio.Server]) -> None:
    """Stop accepting, let the connections already accepted reach their protocols, then close."""
    servers = list(servers)
    loop = asyncio.get_running_loop()
    for server in servers:
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
    for _ in range(_SETTLE_TURNS):
        await asyncio.sleep(0)
    for server in servers:
        server.close()
