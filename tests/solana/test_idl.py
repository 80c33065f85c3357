"""Drift check: idl/psyche_coordinator.json against the program's and the core's source.

The IDL is written by `idl/generate.py` (the program is pinocchio, not Anchor, so no Anchor tool
generates it; see docs/decisions/0001-sbf-toolchain.md). These tests pin it to the Rust:
the committed file is what the generator writes; instruction and account discriminators; each
instruction is dispatched by the program; the error table (core errors at 6000 + code, program
errors from 6300); and the fields of `Run`, `Config`, `ModelRef`, `WitnessStats` and
`WitnessInput`. The LiteSVM and validator tests then exercise it end to end.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from anchorpy import Idl
from anchorpy.coder.accounts import AccountsCoder
from anchorpy.coder.instruction import InstructionCoder
from solders.keypair import Keypair

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "programs" / "psyche-coordinator" / "src"
CORE = ROOT / "crates" / "coordinator" / "src"
IDL_JSON = ROOT / "idl" / "psyche_coordinator.json"


def rust_u8_array(text: str, name: str) -> bytes:
    """The bytes of `pub const <name>: [u8; 8] = [..];` in Rust source."""
    m = re.search(rf"const {name}: \[u8; 8\] = \[([0-9,\s]+)\];", text)
    assert m, f"constant {name} not found"
    return bytes(int(x) for x in m.group(1).replace(" ", "").split(",") if x)


def camel(snake: str) -> str:
    """snake_case to the camelCase the legacy IDL format uses."""
    head, *rest = snake.split("_")
    return head + "".join(part.capitalize() for part in rest)


def rust_struct(text: str, name: str) -> list[tuple[str, str]]:
    body = re.search(rf"pub struct {name} \{{(.*?)\n\}}", text, re.DOTALL)
    assert body, f"struct {name} not found"
    return [(n, t.strip()) for n, t in re.findall(r"pub (\w+): ([^,]+),", body.group(1))]


def test_committed_idl_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("idl_generate", ROOT / "idl" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert IDL_JSON.read_text() == rendered, "run .venv/bin/python idl/generate.py"
    package_copy = ROOT / "psyche_client" / "solana" / "psyche_coordinator.json"
    assert package_copy.read_text() == rendered, "run .venv/bin/python idl/generate.py"


def test_instruction_discriminators_match_the_program(idl: Idl) -> None:
    lib = (SRC / "lib.rs").read_text()
    sighashes = InstructionCoder(idl).sighashes
    assert set(sighashes) == {
        "init_run",
        "update",
        "set_paused",
        "join_run",
        "withdraw",
        "tick",
        "warmup_witness",
        "witness",
        "health_check",
        "report",
        "checkpoint",
        "close_run",
        "advertise",
        "close_peer",
    }
    for name, sighash in sighashes.items():
        assert sighash == rust_u8_array(lib, name.upper()), name
        assert f"discriminator::{name.upper()} => instructions::{name}(" in lib, name


def test_account_discriminators_match_the_program(idl: Idl) -> None:
    state = (SRC / "state.rs").read_text()
    discriminators = AccountsCoder(idl).acc_name_to_discriminator
    run_disc, peer_disc, coord_disc = re.findall(
        r"const DISCRIMINATOR: \[u8; 8\] = \[([0-9,\s]+)\];", state
    )
    assert discriminators == {
        "Run": bytes(int(x) for x in run_disc.split(",")),
        "Peer": bytes(int(x) for x in peer_disc.split(",")),
        "CoordinatorAccount": bytes(int(x) for x in coord_disc.split(",")),
    }


def test_errors_match_the_program_and_the_core(idl: Idl) -> None:
    program_errors = {
        name: int(code)
        for name, code in re.findall(
            r"^\s+(\w+) = (\d+),$", (SRC / "error.rs").read_text(), re.MULTILINE
        )
        if int(code) >= 6000
    }
    core_errors = {
        name: 6000 + int(code)
        for name, code in re.findall(
            r"^\s+(\w+) = (\d+) => \"", (CORE / "error.rs").read_text(), re.MULTILINE
        )
    }
    assert len(core_errors) == 39
    assert {e.name: e.code for e in idl.errors or []} == core_errors | program_errors
    assert "const CORE_ERROR_BASE: u32 = 6000;" in (CORE / "layout.rs").read_text()


# Rust field type -> IDL type. A publicKey is 32 raw bytes; a Bloom is 320.
RUST_TO_IDL: dict[str, list[Any]] = {
    "[u8; 32]": [{"array": ["u8", 32]}, "publicKey"],
    "[u8; 2]": [{"array": ["u8", 2]}],
    "[u8; 3]": [{"array": ["u8", 3]}],
    "[u8; 6]": [{"array": ["u8", 6]}],
    "[u8; 4]": [{"array": ["u8", 4]}],
    "[u8; PEER_ADDR_BYTES]": [{"array": ["u8", 128]}],
    "i64": ["i64"],
    "[u8; MODEL_LOCATION_BYTES]": [{"array": ["u8", 248]}],
    "[u8; MODEL_REVISION_BYTES]": [{"array": ["u8", 64]}],
    "Bloom": [{"array": ["u8", 320]}],
    "WitnessStats": [{"defined": "WitnessStats"}],
    "u64": ["u64"],
    "u32": ["u32"],
    "u16": ["u16"],
    "u8": ["u8"],
}


def idl_struct(section: str, name: str) -> list[dict[str, Any]]:
    idl_json = json.loads(IDL_JSON.read_text())
    (entry,) = [a for a in idl_json[section] if a["name"] == name]
    fields: list[dict[str, Any]] = entry["type"]["fields"]
    return fields


def check_fields(rust_fields: list[tuple[str, str]], idl_fields: list[dict[str, Any]]) -> None:
    assert [f["name"] for f in idl_fields] == [camel(name) for name, _ in rust_fields]
    for (name, rust_type), field in zip(rust_fields, idl_fields, strict=True):
        assert field["type"] in RUST_TO_IDL[rust_type], name


def test_account_fields_match_the_program() -> None:
    state = (SRC / "state.rs").read_text()
    check_fields(rust_struct(state, "Run"), idl_struct("accounts", "Run"))
    check_fields(rust_struct(state, "Peer"), idl_struct("accounts", "Peer"))
    header = rust_struct(state, "CoordinatorHeader")
    coord = idl_struct("accounts", "CoordinatorAccount")
    assert [f["name"] for f in coord] == [n for n, _ in header] + ["state"]
    assert coord[1]["type"] == {"array": ["u8", 64176]}
    assert "pub const STATE_OFFSET: usize = layout::COORDINATOR_STATE_OFFSET;" in state
    header_size = "size_of::<CoordinatorHeader>()\n            == layout::COORDINATOR_STATE_OFFSET"
    assert header_size in state


def test_argument_types_match_the_core() -> None:
    config = (CORE / "config.rs").read_text()
    state = (CORE / "state.rs").read_text()
    check_fields(rust_struct(config, "Config"), idl_struct("types", "Config"))
    for name in ("ModelRef", "WitnessStats", "WitnessInput"):
        check_fields(rust_struct(state, name), idl_struct("types", name))


def test_program_id_agrees_everywhere(idl: Idl) -> None:
    """The IDL's address, the program's `ID` and the committed deploy keypair are one key."""
    keypair_bytes = json.loads((ROOT / "localnet" / "psyche_coordinator-keypair.json").read_text())
    keypair_pubkey = str(Keypair.from_bytes(bytes(keypair_bytes)).pubkey())
    lib = (SRC / "lib.rs").read_text()
    assert "Address::from_str_const(psyche_core::layout::PROGRAM_ID)" in lib
    declared = re.search(r'PROGRAM_ID: &str = "(\w+)";', (CORE / "layout.rs").read_text())
    assert declared, "PROGRAM_ID not found in crates/coordinator/src/layout.rs"
    metadata = idl.metadata if isinstance(idl.metadata, dict) else {}
    assert metadata.get("address") == declared.group(1) == keypair_pubkey
