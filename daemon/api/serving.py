"""Serving an ASGI app with uvicorn on a socket the daemon bound, with the daemon owning signals."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


class ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns the signals: SIGTERM must drain the dispatcher, not just stop HTTP.
        yield


def server_config(app: ASGIApp) -> uvicorn.Config:
    """uvicorn on the running loop (uvloop under ``backchannel run``), httptools, no access log."""
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        loop="none",
        http="httptools",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening-ready TCP socket on ``host:port`` (port 0: any free port).

    ``reuse_port``: several processes of this user bind the same port and the kernel spreads
    new connections evenly over those listening (the intake workers).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock
