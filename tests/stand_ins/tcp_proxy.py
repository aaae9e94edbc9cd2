"""A TCP proxy on 127.0.0.1 in front of a real server, which a test can take down and bring back:
down() resets every connection and refuses new ones, as a server restarting or crashing does."""

from __future__ import annotations

import asyncio


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        """Listen (on the same port once it had one) and pass bytes both ways."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Reset every connection and stop listening."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, upstream]
        await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def in_front_of_postgres(postgres_url: str) -> tuple[TcpProxy, str]:
    """A started proxy in front of the server of ``postgres_url``, and the URL that goes through it."""
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    proxy = TcpProxy(int(host_port.rsplit(":", 1)[1]))
    await proxy.start()
    return proxy, postgres_url.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/", 1)
