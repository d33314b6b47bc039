"""The chaos fault proxy against a local echo server: each fault does what the docs say.

The network scenarios' verdicts rest on the proxy really cutting, delaying and resetting the
workers' traffic, so its faults are checked here without a broker.
"""

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from cartwatch_dev.chaos.deployment import free_port
from cartwatch_dev.chaos.proxy import STALL, FaultProxy


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    """A proxy in front of an echo server."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    running = FaultProxy(f"127.0.0.1:{port}", free_port(), seed=1).start()
    try:
        yield running
    finally:
        running.stop()
        server.close()


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      data: bytes = b"ping") -> float:
    began = time.monotonic()
    writer.write(data)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(data)), 10) == data
    return time.monotonic() - began


async def test_forwards_both_ways_without_a_fault(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    assert await _round_trip(reader, writer) < 0.2
    writer.close()


async def test_reset_sends_an_rst_to_the_client(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    await _round_trip(reader, writer)
    assert await asyncio.to_thread(proxy.reset) == 1
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(1), 5)
    reader, writer = await _connect(proxy)  # a new connection works at once
    assert await _round_trip(reader, writer) < 0.2
    writer.close()


async def test_blackhole_holds_bytes_without_closing_then_delivers_them(
    proxy: FaultProxy,
) -> None:
    reader, writer = await _connect(proxy)
    await _round_trip(reader, writer)
    await asyncio.to_thread(proxy.blackhole, True)
    writer.write(b"held")
    late, new = await _connect(proxy)  # accepted, but goes nowhere either
    new.write(b"new!")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 1.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(late.readexactly(4), 0.1)
    await asyncio.to_thread(proxy.blackhole, False)
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    assert await asyncio.wait_for(late.readexactly(4), 5) == b"new!"
    writer.close()
    new.close()


async def test_latency_delays_each_way_but_keeps_chunks_pipelined(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    proxy.latency = 0.3
    assert 0.55 < await _round_trip(reader, writer) < 1.0  # 0.3 s there, 0.3 s back
    began = time.monotonic()
    for _ in range(5):  # five chunks in flight at once take one round trip, not five
        writer.write(b"x" * 100)
        await writer.drain()
        await asyncio.sleep(0.02)
    await asyncio.wait_for(reader.readexactly(500), 10)
    assert time.monotonic() - began < 1.2
    writer.close()


async def test_loss_stalls_some_chunks_and_never_drops_or_reorders(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    writer.transport.get_extra_info("socket").setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    proxy.loss = 0.5
    times = [await _round_trip(reader, writer, f"{n:04}".encode()) for n in range(20)]
    stalled = [t for t in times if t >= STALL[0]]
    assert stalled, "no chunk stalled at 50 % emulated loss"
    assert len(stalled) < 20
    assert max(times) < 2 * STALL[1] + 0.5  # at most one stall each way
    writer.close()
