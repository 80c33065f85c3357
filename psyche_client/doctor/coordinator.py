"""Is the run's coordinator there, what does it say, and how far off is our clock?

The TCP probe speaks the handshake itself (rather than through `TcpCoordinatorClient`) because
it wants what the client discards: the welcome's server time, the address the server sees us
at, its version, and the round trip. It then asks `may_join`, the same question `join`'s
preflight asks, so a join-control refusal shows up here. The Solana probe asks the RPC node
for its version, checks that the coordinator program is deployed, reads the run, and takes
the newest block's time as the cluster's clock.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from psyche_client import _core
from psyche_client.doctor.report import Check, fail, ok, warn
from psyche_client.identity import NodeKey

SKEW_WARN_S = 3.0
"""Round deadlines are whole seconds on the coordinator's clock; a few seconds off and a
client's own estimates of time left in a round (and its logs) stop matching the run's."""


@dataclass
class CoordinatorFacts:
    """What the probe learnt; `server_time`/`local_time` are unix seconds (None: unknown)."""

    kind: str
    address: str
    host: str
    state: _core.Coordinator
    version: str = ""
    server_time: float | None = None
    local_time: float = 0.0
    observed_host: str = ""


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno and e.errno > 0 and not isinstance(e, socket.gaierror):
        return os.strerror(e.errno)
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


async def probe_tcp(
    address: str, key: NodeKey, join_token: str | None, timeout_s: float
) -> tuple[CoordinatorFacts | None, list[Check]]:
    """Handshake with a TCP coordinator, read its first state and ask `may_join`."""
    from psyche_client.backend.tcp import OPEN_FRAME, AddressError, parse_address
    from psyche_client.server import wire
    from psyche_client.server.join_policy import JOIN_REFUSALS, join_proof

    try:
        host, port = parse_address(address)
    except AddressError as e:
        return None, [fail("coordinator", str(e), "give the run as HOST:PORT")]
    where = f"{host}:{port}"
    limit = wire.DEFAULT_MAX_CONTROL_BYTES
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError) as e:
        return None, [
            fail(
                "coordinator",
                f"cannot reach {where}: {_reason(e)}",
                "check the address, that `psyche-client serve` runs there, and firewalls",
            )
        ]
    try:
        writer.write(OPEN_FRAME)

        async def control() -> dict[str, Any]:
            return wire.decode_control(await wire.read_frame(reader, limit))

        try:
            challenge = await asyncio.wait_for(control(), timeout_s)
            if challenge.get("type") != "challenge" or not isinstance(challenge.get("run_id"), str):
                raise wire.WireError("no challenge")
        except (wire.WireError, EOFError, OSError, TimeoutError):
            return None, [
                fail(
                    "coordinator",
                    f"{where} does not speak the Psyche coordinator protocol",
                    "is it the run's address (not its metrics or data port)?",
                )
            ]
        nonce = wire.hex_field(challenge, "nonce", 32)
        run_id = str(challenge["run_id"])
        sent = time.time()
        writer.write(wire.encode_control(wire.make_hello(key, nonce, run_id)))
        welcome = await asyncio.wait_for(control(), timeout_s)
        got = time.time()
        if welcome.get("type") != "welcome":
            message = welcome.get("message", welcome.get("type"))
            return None, [
                fail("coordinator", f"{where} refused the handshake: {message}", "see its log")
            ]
        token_body: dict[str, Any] = {}
        if join_token:
            token_body["token_proof"] = join_proof(join_token, nonce, key.public).hex()
        ask = wire.sign_envelope(key, nonce, 0, "may_join", token_body)
        writer.write(wire.encode_control(ask))
        state_bytes: bytes | None = None
        reply: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout_s
        while state_bytes is None or reply is None:
            left = deadline - time.monotonic()
            frame = await asyncio.wait_for(wire.read_frame(reader, 64 << 20), max(0.01, left))
            if frame.kind == wire.KIND_STATE:
                state_bytes = frame.body
                continue
            message = wire.decode_control(frame)
            if message.get("seq") == 0:
                reply = message
            elif message.get("type") == "fatal":
                raise wire.WireError(str(message.get("message")))
    except (wire.WireError, EOFError, OSError, TimeoutError) as e:
        return None, [
            fail("coordinator", f"{where}: the handshake broke off: {_reason(e)}", "see its log")
        ]
    finally:
        writer.close()
    server_time = welcome.get("server_time")
    facts = CoordinatorFacts(
        kind="tcp",
        address=where,
        host=host,
        state=_core.Coordinator.from_bytes(state_bytes),
        version=str(welcome.get("version", "")),
        server_time=float(server_time) if isinstance(server_time, int | float) else None,
        local_time=(sent + got) / 2,
        observed_host=str(welcome.get("observed_host", "")),
    )
    rtt_ms = (got - sent) * 1000
    version = f"v{facts.version}" if facts.version else "(version not reported)"
    checks = [
        ok("coordinator", f"{where}: Psyche coordinator {version}, round trip {rtt_ms:.0f} ms")
    ]
    checks.append(run_check(facts.state, f"run {run_id!r}"))
    if reply.get("type") == "error" and reply.get("error") in JOIN_REFUSALS:
        checks.append(
            fail(
                "join",
                f"the run's join control refuses this node key: {reply.get('message')}",
                "pass the run's --join-token, or ask its operator to allow your --key",
            )
        )
    elif reply.get("type") == "error":
        checks.append(warn("join", f"may_join: {reply.get('message')}", "see the server's log"))
    else:
        checks.append(ok("join", "the coordinator would let this node key join"))
    return facts, checks


def run_check(state: _core.Coordinator, what: str) -> Check:
    """Finished runs cannot be joined; paused ones wait for their operator."""
    members = state.count(_core.ClientState.Healthy)
    detail = (
        f"{what}: {state.phase.name}, epoch {state.epoch}, step {state.steps_done}/"
        f"{state.config.total_steps}, {members} healthy of min {state.config.min_clients}"
    )
    if state.phase.name == "Finished":
        return fail("run", detail, "this run is over; ask its operator for the current one")
    if state.paused or state.phase.name == "Paused":
        return warn("run", detail, "the run is paused: clients wait until its operator resumes it")
    return ok("run", detail)


async def _rpc(client: Any, url: str, method: str, *params: Any) -> Any:
    resp = await client.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    )
    body = resp.json()
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error'].get('message', body['error'])}")
    return body["result"]


async def probe_solana(
    run: str, rpc: str, timeout_s: float
) -> tuple[CoordinatorFacts | None, list[Check]]:
    """getVersion, the program account, the run's state and the newest block's time."""
    from urllib.parse import urlparse

    import httpx

    from psyche_client.sdk.source import SolanaSource

    try:
        host = urlparse(rpc).hostname or ""
    except ValueError:
        host = ""
    if not host or not rpc.startswith(("http://", "https://")):
        return None, [
            fail(
                "coordinator",
                f"--rpc {rpc!r} is not an http(s) URL",
                "e.g. --rpc http://127.0.0.1:8899",
            )
        ]
    checks: list[Check] = []
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        try:
            version = await _rpc(client, rpc, "getVersion")
        except (httpx.HTTPError, ValueError, RuntimeError, KeyError) as e:
            return None, [
                fail(
                    "coordinator",
                    f"Solana RPC {rpc} does not answer getVersion: {_reason(e)}",
                    "check --rpc (and that the validator or RPC provider is up)",
                )
            ]
        from psyche_client.solana.program import CoordinatorProgram

        program = CoordinatorProgram().program_id
        try:
            info = await _rpc(client, rpc, "getAccountInfo", str(program), {"encoding": "base64"})
        except (httpx.HTTPError, ValueError, RuntimeError, KeyError) as e:
            info = None
            checks.append(warn("program", f"getAccountInfo {program}: {_reason(e)}", "retry"))
        value = (info or {}).get("value") if isinstance(info, dict) else None
        solana_version = version.get("solana-core", "?") if isinstance(version, dict) else "?"
        checks.insert(0, ok("coordinator", f"Solana RPC {rpc}: solana-core {solana_version}"))
        if not value or not value.get("executable"):
            checks.append(
                fail(
                    "program",
                    f"no coordinator program deployed at {program} on this cluster",
                    "use the cluster the run lives on, or set PSYCHE_PROGRAM_ID",
                )
            )
            return None, checks
        checks.append(ok("program", f"coordinator program {program} is deployed"))
        block_time: float | None = None
        sent = time.time()
        try:
            slot = await _rpc(client, rpc, "getSlot")
            raw_time = await _rpc(client, rpc, "getBlockTime", slot)
            block_time = float(raw_time) if isinstance(raw_time, int | float) else None
        except (httpx.HTTPError, ValueError, RuntimeError, KeyError):
            pass
        got = time.time()
    source = SolanaSource(run, rpc)
    try:
        state = await source.start(timeout_s)
    except Exception as e:  # noqa: BLE001 - a UserError naming what is wrong, or a transport one
        checks.append(fail("run", str(e), "check the run id (or run account) and --rpc"))
        return None, checks
    finally:
        await source.stop()
    facts = CoordinatorFacts(
        kind="solana",
        address=source.address,
        host=host,
        state=state,
        version=solana_version,
        server_time=block_time,
        local_time=(sent + got) / 2,
    )
    checks.append(run_check(state, f"run {run!r}"))
    return facts, checks


def clock_check(facts: CoordinatorFacts | None, tolerance_s: float = SKEW_WARN_S) -> Check:
    """Our clock against the coordinator's (TCP: its clock at the welcome; Solana: the newest
    block's time, which itself lags real time by a slot or two, hence whole seconds)."""
    if facts is None:
        return warn("clock", "not checked: no coordinator answered", "fix the coordinator first")
    if facts.server_time is None:
        return warn(
            "clock", "the coordinator does not report its time", "compare `date -u` by hand"
        )
    skew = facts.local_time - facts.server_time
    source = "the newest block's time" if facts.kind == "solana" else "the coordinator's clock"
    detail = f"this machine is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} {source}"
    if abs(skew) > tolerance_s:
        return warn("clock", detail, "sync the clock (chrony / systemd-timesyncd, NTP)")
    return ok("clock", detail)
