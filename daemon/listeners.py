"""Closing listening servers without dropping a connection accepted at that moment.

asyncio's selector loop builds an accepted connection's transport in a task of its own, one loop
turn after the accept. A server closed in between makes that task fail (``Server._attach``
asserts, Python 3.11) and asyncio drops the connection silently with its socket open: the client
waits, unanswered, until its own timeout. So the listening sockets stop being read first, the
connections already accepted get their transports and protocols, and only then is the server
closed. uvloop, which ``backchannel run`` prefers, ignores ``remove_reader`` for a server's socket
and goes on accepting until the close; it builds the transport at the accept and calls the
protocol's ``connection_made`` a turn later, hence the turns after the close too. Either way, when
this returns, every connection the server accepted has reached its protocol, which decides what
a connection arriving at a stop gets (the SMTP intake's 421, the HTTP intake's answer or close).
Plain TCP only: over TLS, ``connection_made`` waits for the handshake.
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
    await _settle()
    for server in servers:
        server.close()
    await _settle()


async def _settle() -> None:
    for _ in range(_SETTLE_TURNS):
        await asyncio.sleep(0)
