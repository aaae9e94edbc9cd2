"""One running process per node name on a PostgreSQL store.

A node's claims, its check results (its votes) and the leader's lease are kept under its name
(``store.node``). Two processes started with one name, a configuration copied from node to node,
would each release the other's claims as their own at start (sent twice) and vote as one node.
So a node takes its name at start (table ``node_names``): free, or its holder's instance has not
kept it fresh for a lease, or that holder is a process of this host that no longer runs (a
``kill -9``, restarted at once; "this host" is its kernel boot and PID namespace, not its host
name, which machines and containers may share). A holder that keeps it fresh meanwhile is
alive: the start fails with :class:`NodeNameInUse`, exit code 78, which a service manager does
not restart. Every leadership round keeps the name fresh; a node whose name another instance
took while it stalled stops the same way, and a clean stop gives the name back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


class NodeNameInUse(Exception):
    """Another running process holds this node's name."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a node name, as the database sees it now."""

    #: empty: nobody held it when asked (given back in between): ask again
    instance: str
    started_at: datetime
    #: when its holder last kept it fresh (the database's clock), and how long ago that was
    seen_at: datetime
    age_s: float


class Names(Protocol):
    node: str

    async def take_name(self, instance: str, stale_s: float, dead: str | None = None) -> Holder | None: ...


def new_instance() -> str:
    """This process, told apart from any other: host, process id, where that id names a process
    (:func:`_pid_space`; ``-`` unknown), and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_space() or '-'}:{secrets.token_hex(4)}"


def _pid_space() -> str | None:
    """This kernel boot and PID namespace, hashed: where a process id names one process. A host
    name does not say it: cloned machines share one (``localhost``), and so do containers with
    the host's network but a PID namespace of their own; a process id of theirs means nothing here.
    None where Linux's /proc does not tell it: no holder is then known to be dead."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        space = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return hashlib.sha256(f"{boot} {space}".encode()).hexdigest()[:8]


def dead_here(instance: str) -> bool:
    """Whether ``instance`` was a process of this host (its kernel boot and PID namespace) that no
    longer runs."""
    parts = instance.split(":")  # a host name has no colon
    if len(parts) != 4:
        return False
    host, pid, space, _ = parts
    here = _pid_space()
    if host != socket.gethostname() or here is None or space != here:
        return False
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process of another user runs under that id
        return False
    return False


def in_use(node: str, holder: Holder) -> NodeNameInUse:
    return NodeNameInUse(
        f"another process is running as node {node!r} on this store ({holder.instance}, started "
        f"{holder.started_at.isoformat(timespec='seconds')}, seen {holder.age_s:.1f} s ago): "
        "give each node its own store.node"
    )


async def take(store: Names, instance: str, stale_s: float, poll_s: float) -> None:
    """Take ``store.node`` for ``instance``; NodeNameInUse if a live process holds it."""
    first: Holder | None = None
    deadline = time.monotonic() + 2 * stale_s + 1
    while True:
        holder = await store.take_name(instance, stale_s)
        if holder is not None and dead_here(holder.instance):
            holder = await store.take_name(instance, stale_s, dead=holder.instance)
        if holder is None:
            return
        if not holder.instance:
            continue  # given back just now: take it
        if first is None:
            first = holder
        elif holder.instance != first.instance or holder.seen_at > first.seen_at:
            raise in_use(store.node, holder)  # taken or kept fresh meanwhile: it runs
        if time.monotonic() > deadline:
            raise in_use(store.node, holder)
        await asyncio.sleep(poll_s)
