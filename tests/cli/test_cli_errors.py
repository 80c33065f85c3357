"""Every user mistake ends in one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "psyche_client.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_user_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("psyche-client: error:") and needle in lines[0], lines[0]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.bin"
    path.write_bytes(b"\x01\x00" * 1000)
    return path


def test_bad_coordinator_address(data_file: Path, tmp_path: Path) -> None:
    result = _cli("join", "host:notaport", f"--data={data_file}", f"--key={tmp_path / 'k'}")
    _assert_user_error(result, "host:port")
    no_wallet = _cli(
        "join",
        "not-an-address",
        f"--data={data_file}",
        f"--key={tmp_path / 'k'}",
        f"--wallet={tmp_path / 'missing.json'}",
    )
    _assert_user_error(no_wallet, "names a Solana run")


def test_unknown_solana_run(data_file: Path, tmp_path: Path) -> None:
    from psyche_client.identity import NodeKey, save_keypair

    save_keypair(NodeKey.generate(), tmp_path / "wallet.json")
    result = _cli(
        "join",
        "no-such-run",
        "--rpc=http://127.0.0.1:9",
        f"--wallet={tmp_path / 'wallet.json'}",
        f"--data={data_file}",
        f"--key={tmp_path / 'k'}",
    )
    _assert_user_error(result, "no-such-run")


def test_unreachable_coordinator(data_file: Path, tmp_path: Path) -> None:
    result = _cli("join", "127.0.0.1:9", f"--data={data_file}", f"--key={tmp_path / 'k.json'}")
    _assert_user_error(result, "cannot reach coordinator")


def test_missing_data_file(tmp_path: Path) -> None:
    result = _cli(
        "join", "127.0.0.1:9", f"--data={tmp_path / 'nope.bin'}", f"--key={tmp_path / 'k'}"
    )
    _assert_user_error(result, "does not exist")


def test_corrupt_key_file(data_file: Path, tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("[1, 2, 3]")
    result = _cli("join", "127.0.0.1:9", f"--data={data_file}", f"--key={key}")
    _assert_user_error(result, "not a Solana keypair")


def test_bad_run_name_and_config(tmp_path: Path) -> None:
    _assert_user_error(
        _cli("serve", "--run=bad name", f"--state-dir={tmp_path}"), "1-32 characters"
    )
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--set=bogus=1"),
        "unknown config field",
    )
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--set=min_clients=0"),
        "invalid run config",
    )
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--set=min_clients"),
        "name=integer",
    )


def test_corrupt_state_file(tmp_path: Path) -> None:
    (tmp_path / "state.bin").write_bytes(b"garbage")
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}"), "not a Psyche state file"
    )


def test_bad_model_reference(tmp_path: Path) -> None:
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--model=./missing-dir"),
        "not a directory",
    )
