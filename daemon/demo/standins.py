"""Local stand-ins for the demo: an SMTP "provider" that can go dark, and a webhook receiver."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from daemon.listeners import close_servers


@dataclass
class ReceivedMail:
    subject: str
    to: list[str]
    message_id: str
    arrived_at: float = field(default_factory=time.time)


@dataclass
class _Sink:
    mail: list[ReceivedMail] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = message_from_bytes(content)
        self.mail.append(
            ReceivedMail(str(parsed["Subject"]), list(envelope.rcpt_tos), str(parsed["Message-ID"]))
        )
        return "250 OK queued"


class SmtpProvider:
    """An SMTP server on 127.0.0.1 that can be stopped (connections refused) and restarted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sink = _Sink()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


class WebhookReceiver:
    """A minimal HTTP/1.1 server that records POSTed JSON and checks Standard Webhooks signatures."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._key = base64.b64decode(secret.removeprefix("whsec_"))
        self.received: list[dict[str, Any]] = []
        self.arrived_at: list[float] = []
        self.signatures_ok: list[bool] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            await close_servers([self._server])
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self._record(headers, body)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _record(self, headers: dict[str, str], body: bytes) -> None:
        signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
        expected = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
        offered = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split()]
        self.signatures_ok.append(any(hmac.compare_digest(expected, s) for s in offered))
        self.received.append(json.loads(body))
        self.arrived_at.append(time.time())
