"""A p2p node stand-in for in-process client tests: model sharing over an in-memory network.

`MemoryNode` offers the part of `P2PNode` that warmup and resync use (share_model, serve,
fetch_model, pull, set_step), but its model download is the real one: `p2p.model.fetch_model`
with its manifest choice (`select`), per-piece sha256 checks and source rotation, over an RPC
and a blob transfer that read the other nodes' stores directly. Tests can cut links
(`MemoryNet.block`), make a node lie (`lie_bytes`: serve other bytes than it signed) and
choose who serves first (`MemoryNet.first`).
"""

from __future__ import annotations

from typing import Any

from psyche_client.identity import NodeKey
from psyche_client.p2p import wire
from psyche_client.p2p.config import P2PConfig
from psyche_client.p2p.manifest import Manifest
from psyche_client.p2p.model import ModelSnapshot, Select, fetch_model
from psyche_client.p2p.transfer import FetchStats, Progress, Source


class MemoryNet:
    """The nodes of one run by node id, and the links that are cut."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, MemoryNode] = {}
        self.blocked: set[tuple[bytes, bytes]] = set()
        self.first: bytes | None = None
        """If set: every blob is served by this node before any other may serve it (the
        others answer NOT_FOUND until then), so a test knows who a download tries first."""
        self._served_first: set[bytes] = set()

    def block(self, a: bytes, b: bytes) -> None:
        """Neither of the two can reach the other."""
        self.blocked |= {(a, b), (b, a)}

    def unblock(self, a: bytes, b: bytes) -> None:
        self.blocked -= {(a, b), (b, a)}

    def reach(self, src: bytes, dst: bytes) -> MemoryNode:
        if (src, dst) in self.blocked or dst not in self.nodes:
            raise ConnectionRefusedError(f"{dst.hex()[:8]} unreachable")
        return self.nodes[dst]


class MemoryNode:
    def __init__(self, net: MemoryNet, key: NodeKey, run_id: str = "run") -> None:
        self.net, self.key, self.run_id = net, key, run_id
        self.node_id = key.node_id
        net.nodes[self.node_id] = self
        self.current_step: int | None = None
        self.manifest: Manifest | None = None
        self.blobs: dict[bytes, bytes] = {}
        self.lie_bytes = False
        """Serve every blob with its first byte flipped (the manifest stays as signed)."""
        self.stats: list[FetchStats] = []
        self.pulls = 0

    def set_step(self, step: int) -> None:
        self.current_step = step

    def share_model(self, config: bytes, tensors: dict[str, bytes]) -> Manifest:
        self.manifest = Manifest.build(self.key, self.run_id, config, tensors)
        self.blobs = {self.manifest.config_sha256: bytes(config)}
        for entry in self.manifest.tensors:
            self.blobs[entry.sha256] = bytes(tensors[entry.name])
        return self.manifest

    def serve(self, key: bytes, payload: bytes, step: int | None = None) -> None:
        self.blobs[key] = bytes(payload)

    async def pull(self, step: int) -> int:
        self.pulls += 1
        return 0

    def _blob(self, key: bytes) -> bytes | None:
        data = self.blobs.get(key)
        if data is None or not self.lie_bytes or not data:
            return data
        return bytes([data[0] ^ 0xFF]) + data[1:]

    async def fetch_model(
        self,
        peers: list[bytes],
        *,
        trust: Any = None,
        select: Select | None = None,
        parallel: int = 4,
        timeout: float | None = None,
        check: Any = None,
    ) -> ModelSnapshot:
        async def rpc(node: bytes, op: int, body: bytes) -> tuple[int, bytes]:
            peer = self.net.reach(self.node_id, node)
            if op == wire.OP_INFO:
                return wire.STATUS_OK, b""
            if op == wire.OP_MANIFEST and peer.manifest is not None:
                return wire.STATUS_OK, peer.manifest.encode()
            return wire.STATUS_NOT_FOUND, b""

        async def attempt(
            src: Source,
            _transport: str,
            key: bytes,
            dest: memoryview,
            offset: int,
            progress: Progress,
            _budget: float,
        ) -> None:
            net = self.net
            data = net.reach(self.node_id, src.node)._blob(key)
            if net.first is not None and src.node != net.first and key not in net._served_first:
                data = None
            if data is None:
                raise wire.NotFound("not held")
            if src.node == net.first:
                net._served_first.add(key)
            dest[offset : len(data)] = data[offset:]
            progress.advance(len(data))

        return await fetch_model(
            peers,
            rpc=rpc,
            attempt=attempt,
            hash_pool=None,
            config=P2PConfig(busy_backoff=0.01),
            record=self.stats.append,
            trust=trust or (lambda m: m.run_id == self.run_id),
            parallel=parallel,
            timeout=timeout or 5.0,
            select=select,
            check=check,
        )

    @property
    def liars(self) -> set[bytes]:
        return set().union(*(s.liars for s in self.stats)) if self.stats else set()
