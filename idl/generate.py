"""Writes idl/psyche_coordinator.json (legacy Anchor IDL, the format anchorpy 0.21 reads).

The program is pinocchio, not Anchor, so no tool generates its IDL (docs/decisions/0001). This
script is the one place the IDL is written from: instructions and their accounts are declared
below, the error table is read from the Rust sources (`CoreError` in crates/coordinator, offset
by 6000, and the program's own codes), and tests/solana/test_idl.py checks the result against
the program source. Run: `.venv/bin/python idl/generate.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from psyche_client import _core

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "idl" / "psyche_coordinator.json"
# The SDK's copy, shipped inside the Python package (psyche_client.solana.program.load_idl).
PACKAGE_COPY = ROOT / "psyche_client" / "solana" / "psyche_coordinator.json"
# Layout values come from the Rust definitions (psyche_core::layout) through the bindings.
PROGRAM_ID = _core.PROGRAM_ID
CORE_ERROR_BASE = _core.CORE_ERROR_BASE
ADDR_BYTES = _core.PEER_ADDR_BYTES


def acc(name: str, mut: bool = False, signer: bool = False, docs: str = "") -> dict[str, Any]:
    a: dict[str, Any] = {"name": name, "isMut": mut, "isSigner": signer}
    if docs:
        a["docs"] = [docs]
    return a


def arg(name: str, ty: Any) -> dict[str, Any]:
    return {"name": name, "type": ty}


def u8s(n: int) -> dict[str, Any]:
    return {"array": ["u8", n]}


SLOT_HASHES = acc("slotHashes", docs="the SlotHashes sysvar (randomness of the tick)")


def member(name: str, docs: str, args: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "docs": [docs],
        "accounts": [
            acc("user", signer=True, docs="the client's wallet"),
            acc("run"),
            acc("coordinator", mut=True),
            SLOT_HASHES,
        ],
        "args": args,
    }


def owner(name: str, docs: str, args: list[dict[str, Any]], run_mut: bool = False) -> Any:
    return {
        "name": name,
        "docs": [docs],
        "accounts": [
            acc("owner", signer=True),
            acc("run", mut=run_mut),
            acc("coordinator", mut=True),
            SLOT_HASHES,
        ],
        "args": args,
    }


INSTRUCTIONS = [
    {
        "name": "initRun",
        "docs": [
            'Creates the run PDA ["run", run_id] and initializes the coordinator account, which '
            "the same transaction created just before with system_program.create_account "
            "(CoordinatorAccount size, owned by this program). The run starts Paused."
        ],
        "accounts": [
            acc("owner", mut=True, signer=True, docs="pays for the run PDA and owns the run"),
            acc("run", mut=True),
            acc("coordinator", mut=True, signer=True),
            acc("systemProgram"),
        ],
        "args": [
            arg("runId", u8s(32)),
            arg("joinAuthority", "publicKey"),
            arg("config", {"defined": "Config"}),
            arg("model", {"defined": "ModelRef"}),
        ],
    },
    owner(
        "update",
        "Owner only, while Paused: replaces the config, the model reference and/or the join "
        "authority (all zeros = permissionless).",
        [
            arg("config", {"option": {"defined": "Config"}}),
            arg("model", {"option": {"defined": "ModelRef"}}),
            arg("joinAuthority", {"option": "publicKey"}),
        ],
        run_mut=True,
    ),
    owner(
        "setPaused",
        "Owner only: pause (aborts a running epoch) or resume.",
        [arg("paused", "bool")],
    ),
    {
        "name": "joinRun",
        "docs": [
            "Registers the user's wallet with its node key. authorizer: the run's join "
            "authority when it has one, else any signer (pass the user again). node: the node "
            "key itself, which signs (proof of possession)."
        ],
        "accounts": [
            acc("user", signer=True),
            acc("authorizer", signer=True),
            acc("node", signer=True, docs="the node key being registered (proof of possession)"),
            acc("run"),
            acc("coordinator", mut=True),
            SLOT_HASHES,
        ],
        "args": [arg("nodeKey", u8s(32))],
    },
    member("withdraw", "The user leaves the run.", []),
    {
        "name": "tick",
        "docs": ["Permissionless: performs the due phase change, if any."],
        "accounts": [acc("run"), acc("coordinator", mut=True), SLOT_HASHES],
        "args": [],
    },
    member("warmupWitness", "A member reports it has loaded the model (Warmup).", []),
    member(
        "witness",
        "A witness of the current round submits its two salted filters and stats.",
        [arg("input", {"defined": "WitnessInput"})],
    ),
    member(
        "healthCheck",
        "A member drops a target judged unhealthy for a final round.",
        [arg("target", "u16"), arg("height", "u32")],
    ),
    member(
        "report",
        "A verifier of the current round reports its assigned target's result as wrong.",
        [arg("target", "u16")],
    ),
    member(
        "checkpoint",
        "A healthy member records the epoch's checkpoint (Cooldown).",
        [arg("model", {"defined": "ModelRef"})],
    ),
    {
        "name": "closeRun",
        "docs": ["Owner only, while Paused or Finished: closes both accounts, rent to the owner."],
        "accounts": [
            acc("owner", mut=True, signer=True),
            acc("run", mut=True),
            acc("coordinator", mut=True),
        ],
        "args": [],
    },
    {
        "name": "advertise",
        "docs": [
            "A registered client publishes its p2p endpoints "
            f"(each at most {ADDR_BYTES} bytes of UTF-8) "
            'in its peer PDA ["peer", run, wallet], created on first use (the wallet pays).'
        ],
        "accounts": [
            acc("user", mut=True, signer=True),
            acc("run"),
            acc("coordinator"),
            acc("peer", mut=True),
            acc("systemProgram"),
        ],
        "args": [arg("p2pAddr", "string"), arg("fastAddr", "string")],
    },
    {
        "name": "closePeer",
        "docs": ["The wallet removes its peer entry; the rent returns to it."],
        "accounts": [acc("user", mut=True, signer=True), acc("peer", mut=True)],
        "args": [],
    },
]


def struct(name: str, fields: list[tuple[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "type": {"kind": "struct", "fields": [{"name": n, "type": t} for n, t in fields]},
    }


TYPES = [
    struct(
        "Config",
        [
            ("totalSteps", "u64"),
            ("batchSizeStart", "u32"),
            ("batchSizeEnd", "u32"),
            ("batchRampSteps", "u32"),
            ("roundsPerEpoch", "u32"),
            ("waitingExtraSecs", "u32"),
            ("warmupSecs", "u32"),
            ("maxRoundTrainSecs", "u32"),
            ("roundWitnessSecs", "u32"),
            ("witnessGraceSecs", "u32"),
            ("cooldownSecs", "u32"),
            ("minClients", "u16"),
            ("maxClients", "u16"),
            ("witnessesPerRound", "u16"),
            ("witnessQuorumPct", "u8"),
            ("verificationPct", "u8"),
            ("verifiersPerTarget", "u8"),
            ("ejectReports", "u8"),
            ("minRoundTrainSecs", "u16"),
            ("reserved", u8s(4)),
        ],
    ),
    struct(
        "ModelRef",
        [
            ("kind", "u8"),
            ("pad0", "u8"),
            ("locationLen", "u16"),
            ("revisionLen", "u16"),
            ("pad1", u8s(2)),
            ("location", u8s(248)),
            ("revision", u8s(64)),
        ],
    ),
    struct(
        "WitnessStats",
        [
            ("lossMilli", "u32"),
            ("tokensPerSec", "u32"),
            ("downloadKib", "u32"),
            ("reserved", "u32"),
        ],
    ),
    struct(
        "WitnessInput",
        [
            ("position", "u16"),
            ("reserved", "u16"),
            ("stats", {"defined": "WitnessStats"}),
            ("results", u8s(320)),
            ("trainers", u8s(320)),
        ],
    ),
]

ACCOUNTS = [
    struct(
        "Run",
        [
            ("owner", "publicKey"),
            ("joinAuthority", "publicKey"),
            ("coordinator", "publicKey"),
            ("runId", u8s(32)),
            ("stateVersion", "u32"),
            ("bump", "u8"),
            ("reserved", u8s(3)),
        ],
    ),
    struct(
        "Peer",
        [
            ("run", "publicKey"),
            ("wallet", "publicKey"),
            ("nodeKey", u8s(32)),
            ("updatedAt", "i64"),
            ("p2pAddrLen", "u16"),
            ("fastAddrLen", "u16"),
            ("bump", "u8"),
            ("reserved", u8s(3)),
            ("p2pAddr", u8s(ADDR_BYTES)),
            ("fastAddr", u8s(ADDR_BYTES)),
        ],
    ),
    # The state is psyche_core::State byte for byte; decode it with
    # psyche_client._core.Coordinator.from_bytes(data[40:]) rather than field by field.
    struct("CoordinatorAccount", [("run", "publicKey"), ("state", u8s(_core.STATE_SIZE))]),
]


def doc_comments(src: str) -> dict[str, str]:
    """`Name = code` → the `///` comment above it."""
    out = {}
    for m in re.finditer(r"((?:\s*///[^\n]*\n)+)\s*(\w+) = \d+,", src):
        text = " ".join(line.strip()[3:].strip() for line in m.group(1).strip().splitlines())
        out[m.group(2)] = text
    return out


def errors() -> list[dict[str, Any]]:
    core_src = (ROOT / "crates" / "coordinator" / "src" / "error.rs").read_text()
    prog_src = (ROOT / "programs" / "psyche-coordinator" / "src" / "error.rs").read_text()
    out = []
    # The core's error table: `Name = code => "the rule",` (the message every front end shows).
    for name, code, msg in re.findall(r'^\s+(\w+) = (\d+) => "([^"]*)",$', core_src, re.MULTILINE):
        out.append({"code": CORE_ERROR_BASE + int(code), "name": name, "msg": msg})
    prog_docs = doc_comments(prog_src)
    for name, code in re.findall(r"^\s+(\w+) = (\d+),$", prog_src, re.MULTILINE):
        if int(code) >= 6000:
            out.append({"code": int(code), "name": name, "msg": prog_docs[name]})
    return out


def idl() -> dict[str, Any]:
    return {
        "version": "0.2.0",
        "name": "psyche_coordinator",
        "instructions": INSTRUCTIONS,
        "accounts": ACCOUNTS,
        "types": TYPES,
        "errors": errors(),
        "metadata": {"address": PROGRAM_ID},
    }


def render() -> str:
    return json.dumps(idl(), indent=1) + "\n"


if __name__ == "__main__":
    for path in (OUT, PACKAGE_COPY):
        path.write_text(render())
        print(f"wrote {path}")
