"""Bounded reads and writes on libp2p streams, and the blob/RPC status codes as exceptions.

Apart from the host so the fast path and model download can share `raise_for_status` and the
host module keeps to the protocols themselves.
"""

from __future__ import annotations

import trio
from libp2p.abc import INetStream

from . import wire


async def read_exactly(
    stream: INetStream, n: int, idle_timeout: float, deadline: float = float("inf")
) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = await read_chunk(stream, n - got, idle_timeout, deadline)
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


async def read_chunk(
    stream: INetStream, n: int, idle_timeout: float, deadline: float = float("inf")
) -> bytes:
    """One bounded read. Shielded so an outer cancel never interrupts Yamux mid-frame (that
    tore down the whole connection in 10-35% of trials); its own deadline bounds a frozen peer.
    `deadline` (trio clock) caps it by the caller's overall timeout.
    """
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = min(trio.current_time() + idle_timeout, deadline)
        data = await stream.read(n)
    if scope.cancelled_caught:
        raise wire.TransferError("idle timeout")
    if not data:
        raise wire.TransferError("eof")
    return data


async def write_bounded(stream: INetStream, data: bytes | memoryview, idle_timeout: float) -> None:
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + idle_timeout
        await stream.write(bytes(data))
    if scope.cancelled_caught:
        raise wire.TransferError("write timeout")


async def reset_quietly(stream: INetStream) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.reset()
        except Exception:
            pass


async def close_quietly(stream: INetStream) -> None:
    with trio.move_on_after(2) as scope:
        scope.shield = True
        try:
            await stream.close()
        except Exception:
            pass


def raise_for_status(status: int) -> None:
    if status == wire.STATUS_OK:
        return
    if status == wire.STATUS_BUSY:
        raise wire.SourceBusy("busy")
    if status == wire.STATUS_NOT_FOUND:
        raise wire.NotFound("not found")
    raise wire.TransferError(f"refused (status {status})")
