"""A TCP proxy between the workers and the broker that injects network faults on demand.

Why a proxy rather than network namespaces and ``tc netem``: it needs no privileges (no
``CAP_NET_ADMIN``, no ``unshare -n``), so the same test runs unchanged in an unprivileged CI
container and on a laptop, and it hits only the workers' connections: the load producer and the
output reader go straight to the broker on its other listener, so the verdict never rests on a
client that was itself under fault. The broker's ``PROXIED`` listener is *advertised* at the
proxy's address (``stack.settings.ProxiedListener``), so every connection a worker opens after
the bootstrap one (to the partition leaders, the group coordinator) goes through it too.

Faults, each applied per direction and per connection:

- ``reset()``: every open connection is closed with ``SO_LINGER`` 0 on both sides, so the worker
  and the broker each get a TCP RST (``ECONNRESET``), as a NAT or firewall flushing its state does.
- ``blackhole(True)``: nothing is forwarded either way and nothing is closed; new connections are
  accepted (the kernel completes the handshake of a listening socket anyway) but not connected
  onwards. What was sent meanwhile is held and delivered once the blackhole ends, as TCP's
  retransmissions would deliver it once the path is back.
- ``latency``: each chunk is delivered ``latency`` seconds after it arrived; chunks stay
  pipelined (it adds delay, it does not cut throughput).
- ``loss``: a byte stream cannot lose a packet. What loss does to TCP is a stall: the lost
  segment is retransmitted after a retransmission timeout (200 ms at least on Linux, more when
  repeated), and everything behind it waits (head-of-line blocking). So ``loss`` = p holds a
  fraction p of the chunks for a random 200 ms - 1 s before delivering it and what follows it.
  A chunk is what one read returned (up to 64 KiB), not a 1500-byte packet, so this is an
  approximation of loss, not a packet-level model; it is honest about its effect on the
  client: late bytes, never missing or reordered ones.

The proxy runs its own event loop in a thread, so its timing does not depend on what the
scenario's loop is doing, and it can be controlled from any thread (the tests', the command's).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

CHUNK = 64 * 1024
STALL = (0.2, 1.0)
"""Seconds a "lost" chunk is held: Linux's minimum retransmission timeout up to a few RTOs."""

T = TypeVar("T")


@dataclass(eq=False)  # in a set by identity
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        """Close both sides with an RST (SO_LINGER on, timeout 0), not a FIN."""
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed by the peer
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``target`` ("host:port"); see the module for the faults."""

    def __init__(self, target: str, port: int, *, seed: int = 0) -> None:
        host, _, target_port = target.rpartition(":")
        self.target = (host, int(target_port))
        self.port = port
        self.latency = 0.0
        """Seconds added to every chunk, each way."""
        self.loss = 0.0
        """Fraction of chunks held for a random ``STALL`` (emulated packet loss)."""
        self.accepted = 0
        self.resets = 0
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._connections: set[_Connection] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen (in a new thread with its own event loop); return once it accepts."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # reported to start()'s caller
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  reuse_address=True)

    def stop(self) -> None:
        """Stop listening and reset every connection; the thread ends."""
        if self._loop is None or self._thread is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        self._reset_all()
        await self._server.wait_closed()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the proxy is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # -- faults ----------------------------------------------------------------------------

    def reset(self) -> int:
        """Reset every open connection now; returns how many there were."""
        async def reset() -> int:
            return self._reset_all()
        return self._call(reset())

    def _reset_all(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        self._connections.clear()
        self.resets += len(connections)
        return len(connections)

    def blackhole(self, on: bool) -> None:
        """Stop (``True``) or resume (``False``) forwarding in both directions."""
        async def switch() -> None:
            assert self._flowing is not None
            if on:
                self._flowing.clear()
            else:
                self._flowing.set()
        self._call(switch())

    def clear(self) -> None:
        """No fault: forward everything at once."""
        self.latency = self.loss = 0.0
        self.blackhole(False)

    # -- forwarding ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        connection = _Connection(client=writer)
        self._connections.add(connection)
        assert self._flowing is not None
        try:
            await self._flowing.wait()  # a blackholed connection goes nowhere
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):
            connection.abort()
            self._connections.discard(connection)
            return
        connection.upstream = up_writer
        connection.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, connection)),
            asyncio.create_task(self._pipe(up_reader, writer, connection)),
        ]
        await asyncio.gather(*connection.tasks, return_exceptions=True)
        for side in (writer, up_writer):
            side.close()
        self._connections.discard(connection)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    connection: _Connection) -> None:
        """Forward one direction: read as it comes, deliver each chunk when its fault allows.

        Reading and delivering are separate tasks joined by a queue, so an added latency
        delays every chunk by the same amount instead of serialising one delay per chunk.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

        async def read() -> None:
            """Queue each chunk with its arrival time; b"" for a close, None for a reset."""
            try:
                while data := await source.read(CHUNK):
                    queue.put_nowait((loop.time(), data))
            except OSError:
                queue.put_nowait((loop.time(), None))
                return
            queue.put_nowait((loop.time(), b""))

        reading = asyncio.create_task(read())
        assert self._flowing is not None
        try:
            while True:
                arrived, data = await queue.get()
                await self._flowing.wait()
                wait = arrived + self.latency - loop.time()
                if self.loss and self._rng.random() < self.loss:
                    wait = max(wait, 0.0) + self._rng.uniform(*STALL)
                if wait > 0:
                    await asyncio.sleep(wait)
                    await self._flowing.wait()  # a blackhole may have begun meanwhile
                if data is None:  # the sender's side was reset: reset the other side too
                    connection.abort()
                    return
                if not data:  # the sender closed: close the other side
                    sink.close()
                    return
                sink.write(data)
                await sink.drain()
        except OSError:
            connection.abort()  # one side is gone: the other must learn it too
        finally:
            reading.cancel()
