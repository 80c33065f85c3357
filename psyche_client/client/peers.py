"""The client's side of the p2p layer: membership rules, commitments, dialing, and turning
announcements into stored results and momentum disclosures.

Results and momentum disclosures are separate message kinds (p2p/messages.py). Both payloads
are bound by the same commitment scheme (`training.result.commitment` over run id, step, batch
start and payload); a disclosure's commitment is additionally tagged with `MOMENTUM_DOMAIN`, so
no payload can be presented as both kinds under one commitment.
"""

from __future__ import annotations

import asyncio
import logging

from psyche_client import _core
from psyche_client.client.admission import Admission
from psyche_client.client.context import ClientContext
from psyche_client.client.results import Expected, Received, decode_off_loop, refuse_size
from psyche_client.p2p.messages import KIND_ANNOUNCE, KIND_MOMENTUM, Announcement
from psyche_client.p2p.node import P2PNode
from psyche_client.training.result import (
    ResultFormatError,
    commitment,
    commitment_hasher,
)

log = logging.getLogger("psyche.client")

MOMENTUM_DOMAIN = b"psyche/momentum/v1\x00"
"""Prefix of a momentum disclosure's commitment preimage (results have none)."""


def _domain(kind: int) -> bytes:
    return MOMENTUM_DOMAIN if kind == KIND_MOMENTUM else b""


def payload_commitment(run_id: bytes, kind: int, step: int, batch: int, payload: bytes) -> bytes:
    """The commitment of a result (KIND_ANNOUNCE; equal to `training.result.commitment`) or of a
    momentum disclosure (KIND_MOMENTUM) of `batch` at `step`."""
    return commitment(run_id, step, batch, payload, _domain(kind))


async def start_node(ctx: ClientContext) -> P2PNode:
    ctx.run_id = ctx.backend.state().run_id
    run_name = ctx.run_id.rstrip(b"\0").hex()
    admission = Admission()  # which result claims this client admits (admission.py)
    node = P2PNode(
        ctx.key,
        run_name,
        is_member=lambda node_id: is_member(ctx, node_id),
        validate_announcement=lambda ann: admission.refuse(
            ctx.backend.state(), ctx.model_config, ann
        ),
        payload_hasher=lambda ann: commitment_hasher(
            ctx.run_id, ann.step, ann.batch_id, ann.payload_size, _domain(ann.kind)
        ),
        commit=lambda step, batch, payload: payload_commitment(
            ctx.run_id, KIND_ANNOUNCE, step, batch, bytes(payload)
        ),
        config=ctx.options.p2p,
    )
    ctx.node = node
    await node.start()
    log.info(
        "p2p listening on %s port %d (fast path %d), advertising %s",
        node.config.listen_host,
        node.listen_port,
        node.fast_port,
        node.p2p_addr,
    )
    ctx.spawn(consume_announcements(ctx))
    ctx.spawn(watch_reachability(ctx))
    return node


async def publish_momentum(ctx: ClientContext, step: int, batch: int, payload: bytes) -> None:
    """Announce the momentum this client trained `batch` of `step` from (for its verifiers)."""
    assert ctx.node is not None
    digest = payload_commitment(ctx.run_id, KIND_MOMENTUM, step, batch, payload)
    await ctx.node.publish(step, batch, payload, commitment=digest, kind=KIND_MOMENTUM)


P2P_MEMBER_STATES = (_core.ClientState.Healthy, _core.ClientState.Pending)
"""Who may use this client's p2p services: healthy members, and joiners (they fetch the model).
Dropped, withdrawn and ejected clients are cut off at once, not at the epoch's end."""


def is_member(ctx: ClientContext, node_id: bytes) -> bool:
    return any(
        c.node_key == node_id and c.state in P2P_MEMBER_STATES
        for c in ctx.backend.state().clients()
    )


async def connect_peers(ctx: ClientContext, state: _core.Coordinator) -> None:
    """Dial every advertised member not yet connected (a failed dial is retried later)."""
    if ctx.node is None:
        return
    members = {c.node_key for c in state.clients()}
    for node_key, addrs in ctx.backend.peer_addresses().items():
        if node_key == ctx.key.public or node_key in ctx.connected:
            continue
        if node_key in members and addrs.get("p2p_addr"):
            ctx.connected.add(node_key)
            ctx.dialing.add(node_key)
            ctx.spawn(_dial(ctx, node_key, addrs["p2p_addr"]))


async def _dial(ctx: ClientContext, node_key: bytes, addr: str) -> None:
    """Direct dial, else through a relay (p2p host); a failure is retried on a later state."""
    assert ctx.node is not None
    try:
        await ctx.node.connect(addr)
    except Exception as e:  # noqa: BLE001 - a peer that is down is retried later
        log.info("connect to %s failed: %r", node_key.hex()[:8], e)
        ctx.connected.discard(node_key)
    finally:
        ctx.dialing.discard(node_key)


REACH_CHECK_S = 2.0


def unreachable_bound(config: _core.Config, connect_timeout: float) -> float:
    """How long a client may have no p2p connection to any other member before it says so:
    one maximal round-train window (by then its first results are due at the witnesses and
    it has missed theirs), but at least long enough for a direct dial and a relayed one to
    time out (3 x connect_timeout)."""
    return max(float(config.max_round_train_secs), 3 * connect_timeout)


async def watch_reachability(ctx: ClientContext) -> None:
    """Forever: keep `ctx.connected` true to the real connections (so lost peers are dialled
    again) and warn once, in one line (log, event, status), when no other member has been
    reachable for `unreachable_bound`; say so again when one is."""
    loop = asyncio.get_running_loop()
    since: float | None = None
    warned = False
    while True:
        await asyncio.sleep(REACH_CHECK_S)
        node = ctx.node
        if node is None:
            continue
        try:
            kinds = await node.connection_kinds()
        except Exception as e:  # noqa: BLE001 - node stopping
            log.debug("reachability check: %r", e)
            continue
        state = ctx.backend.state()
        others = {c.node_key for c in state.clients()} - {ctx.key.public}
        ctx.connected.intersection_update(set(kinds) | ctx.dialing)
        reached = [n for n in others if n in kinds]
        if reached or not others:
            if warned:
                relayed = sum(1 for n in reached if kinds[n] == "relayed")
                log.warning(
                    "p2p: reaching %d of %d peers again (%d relayed)",
                    len(reached),
                    len(others),
                    relayed,
                )
                ctx.event("peers_reachable", peers=len(reached), relayed=relayed)
            ctx.status.network = ""
            since, warned = None, False
            continue
        now = loop.time()
        since = now if since is None else since
        bound = unreachable_bound(state.config, node.config.connect_timeout)
        if not warned and now - since >= bound:
            warned = True
            msg = (
                f"cannot reach any of the run's {len(others)} other clients over p2p for "
                f"{bound:.0f}s (advertising {node.p2p_addr}); check the firewall/NAT for TCP "
                f"ports {node.listen_port} and {node.fast_port}, or set --listen/--public-addr "
                "(docs/operator.md, Network)"
            )
            log.warning("%s", msg)
            ctx.event("peers_unreachable", members=len(others), after_s=bound, addr=node.p2p_addr)
            ctx.status.network = f"no peer reachable for {bound:.0f}s"


async def consume_announcements(ctx: ClientContext) -> None:
    """Route each accepted announcement: a disclosure is remembered for verifiers (fetched only
    if one needs it), a result is fetched and decoded in the background."""
    assert ctx.node is not None
    while True:
        ann = await ctx.node.announcements.get()
        if ann.sender == ctx.key.public:
            continue
        if ann.kind == KIND_MOMENTUM:
            ctx.disclosures.add(ann)
            continue
        if ann.kind != KIND_ANNOUNCE or ann.commitment in ctx.fetching:
            continue
        ctx.fetching.add(ann.commitment)
        ctx.spawn(_fetch(ctx, ann))


async def _fetch(ctx: ClientContext, ann: Announcement) -> None:
    assert ctx.node is not None
    try:
        expected = Expected.of_trainer(ctx.trainer)
        why = refuse_size(expected, ann.payload_size)  # before the fetch allocates
        if why is not None:
            raise ResultFormatError(why)
        payload = await ctx.node.fetch(ann)
        result = await decode_off_loop(payload, expected)  # checked against the model
    except ResultFormatError as e:
        log.warning("result from %s rejected: %s", ann.sender.hex()[:8], e)
        return
    except Exception as e:  # noqa: BLE001 - a failed fetch is retried by the pull path
        log.info("fetch from %s failed: %r", ann.sender.hex()[:8], e)
        ctx.fetching.discard(ann.commitment)
        return
    ctx.status.bytes_in += len(payload)
    ctx.store(ann.step, Received(ann.sender, ann.batch_id, ann.commitment, result, len(payload)))
