"""Drift check: idl/psyche_coordinator.json against the program's source.

The IDL is written by hand (the program is pinocchio, not Anchor, so nothing generates it; see
docs/decisions/0001-sbf-toolchain.md). These tests pin it to the Rust: instruction and account
discriminators, the error table, and the `Run` field list and types. The LiteSVM and validator
tests then exercise it end to end (anchorpy builds every transaction from it).
"""

from __future__ import annotations

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


def test_instruction_discriminators_match_the_program(idl: Idl) -> None:
    lib = (SRC / "lib.rs").read_text()
    sighashes = InstructionCoder(idl).sighashes
    assert set(sighashes) == {"init_run", "bump", "set_paused"}
    for name, sighash in sighashes.items():
        assert sighash == rust_u8_array(lib, name.upper()), name


def test_account_discriminator_matches_the_program(idl: Idl) -> None:
    state = (SRC / "state.rs").read_text()
    discriminators = AccountsCoder(idl).acc_name_to_discriminator
    assert discriminators == {"Run": rust_u8_array(state, "DISCRIMINATOR")}


def test_errors_match_the_program(idl: Idl) -> None:
    error_rs = (SRC / "error.rs").read_text()
    program_errors = {
        name: int(code)
        for name, code in re.findall(r"^\s+(\w+) = (\d+),$", error_rs, re.MULTILINE)
        if int(code) >= 6000
    }
    assert {e.name: e.code for e in idl.errors or []} == program_errors


# Rust field type -> IDL type, for the types the account uses. A Borsh bool is one byte, 0 or 1,
# which the program stores as u8; a publicKey is 32 raw bytes.
RUST_TO_IDL: dict[str, list[Any]] = {
    "[u8; 32]": [{"array": ["u8", 32]}, "publicKey"],
    "[u8; 2]": [{"array": ["u8", 2]}],
    "u64": ["u64"],
    "u32": ["u32"],
    "u8": ["u8", "bool"],
}


def test_run_fields_match_the_program() -> None:
    state = (SRC / "state.rs").read_text()
    body = re.search(r"pub struct Run \{(.*?)\n\}", state, re.DOTALL)
    assert body, "struct Run not found"
    rust_fields = re.findall(r"pub (\w+): ([^,]+),", body.group(1))
    idl_json = json.loads(IDL_JSON.read_text())
    (run,) = [a for a in idl_json["accounts"] if a["name"] == "Run"]
    idl_fields = run["type"]["fields"]
    assert [f["name"] for f in idl_fields] == [camel(name) for name, _ in rust_fields]
    for (name, rust_type), field in zip(rust_fields, idl_fields, strict=True):
        assert field["type"] in RUST_TO_IDL[rust_type.strip()], name


def test_program_id_agrees_everywhere(idl: Idl) -> None:
    """The IDL's address, the program's `ID` and the committed deploy keypair are one key."""
    keypair_bytes = json.loads((ROOT / "localnet" / "psyche_coordinator-keypair.json").read_text())
    keypair_pubkey = str(Keypair.from_bytes(bytes(keypair_bytes)).pubkey())
    declared = re.search(r'Address::from_str_const\("(\w+)"\)', (SRC / "lib.rs").read_text())
    assert declared, "ID not found in lib.rs"
    metadata = idl.metadata if isinstance(idl.metadata, dict) else {}
    assert metadata.get("address") == declared.group(1) == keypair_pubkey
