"""Is the run's coordinator there, what does it say, and how far off is our clock?

The TCP probe connects as `join` does (`TcpCoordinatorClient`, one attempt) and reads what the
server's welcome reports: its clock, the address it sees us at, and its version. It then asks
`may_join`, the same question `join`'s preflight asks, so a join-control refusal shows up
here. The Solana probe asks the RPC node
for its version, checks that the coordinator program is deployed, reads the run, and takes
the newest block's time as the cluster's clock.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from psyche_client import _core
from psyche_client.backend.pinning import KeyPolicy
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
    address: str,
    key: NodeKey,
    join_token: str | None,
    timeout_s: float,
    key_policy: KeyPolicy | None = None,
) -> tuple[CoordinatorFacts | None, list[Check]]:
    """Connect as `join` does (one attempt), read the first state, ask `may_join`, and time a
    ping; the welcome carries the server's clock, our address as it sees it, and its version."""
    from psyche_client.backend.tcp import (
        AddressError,
        CoordinatorRejected,
        TcpCoordinatorClient,
        parse_address,
    )
    from psyche_client.errors import UserError
    from psyche_client.server.join_policy import JOIN_REFUSALS

    try:
        host, port = parse_address(address)
    except AddressError as e:
        return None, [fail("coordinator", str(e), "give the run as HOST:PORT")]
    where = f"{host}:{port}"
    conn = TcpCoordinatorClient(
        address, key, join_token=join_token, retry_first=False, key_policy=key_policy
    )
    sent = time.time()
    try:
        await conn.start(timeout_s)
    except (UserError, ConnectionError, OSError, TimeoutError) as e:
        hint = "check the address, that `psyche-client serve` runs there, and firewalls"
        if "protocol" in str(e) or "not a" in str(e).lower():
            hint = "is it the run's address (not its metrics or data port)?"
        return None, [fail("coordinator", str(e) or f"no answer from {where}", hint)]
    got = time.time()
    try:
        ping_start = time.monotonic()
        await conn.request("ping", {})
        rtt_ms = (time.monotonic() - ping_start) * 1000
        refusal: CoordinatorRejected | None = None
        try:
            await conn.request("may_join", {})
        except CoordinatorRejected as e:
            refusal = e
        assert conn.state is not None
        state = _core.Coordinator.from_bytes(conn.state)
        welcome = dict(conn.welcome)
        run_id = conn.run_id
    except (ConnectionError, OSError, TimeoutError) as e:
        return None, [
            fail("coordinator", f"{where}: the connection broke off: {_reason(e)}", "see its log")
        ]
    finally:
        await conn.stop()
    server_time = welcome.get("server_time")
    facts = CoordinatorFacts(
        kind="tcp",
        address=where,
        host=host,
        state=state,
        version=str(welcome.get("version", "")),
        server_time=float(server_time) if isinstance(server_time, int | float) else None,
        local_time=(sent + got) / 2,
        observed_host=str(welcome.get("observed_host", "")),
    )
    version = f"v{facts.version}" if facts.version else "(version not reported)"
    checks = [
        ok("coordinator", f"{where}: Psyche coordinator {version}, round trip {rtt_ms:.0f} ms")
    ]
    checks.append(run_check(state, f"run {run_id!r}"))
    if refusal is not None and refusal.name in JOIN_REFUSALS:
        checks.append(
            fail(
                "join",
                f"the run's join control refuses this node key: {refusal.message}",
                "pass the run's --join-token, or ask its operator to allow your --key",
            )
        )
    elif refusal is not None:
        checks.append(warn("join", f"may_join: {refusal.message}", "see the server's log"))
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
