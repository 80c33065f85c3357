"""`join --listen/--public-addr` and `serve --listen` (and its old --host/--port): bad values are
one line on stderr and exit 2, found before torch is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _cli(*args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, "-m", "psyche_client.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and "import time:" not in ln]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("psyche-client: error:") and needle in lines[0], lines[0]


@pytest.fixture
def join_args(tmp_path: Path) -> list[str]:
    data = tmp_path / "tokens.bin"
    data.write_bytes(b"\x01\x00" * 100)
    return ["join", "127.0.0.1:9", f"--data={data}", f"--key={tmp_path / 'k.json'}", "--quiet"]


@pytest.mark.parametrize(
    ("flag", "needle"),
    [
        ("--listen=999.999.999.999:4000", "not a valid IPv4 address"),
        ("--listen=0.0.0.0:99999", "out of range"),
        ("--listen=nonsense", "has no port"),
        ("--public-addr=[::1", "missing ']'"),
    ],
)
def test_join_rejects_bad_addresses(join_args: list[str], flag: str, needle: str) -> None:
    _one_line_error(_cli(*join_args, flag), needle)


def test_join_address_error_comes_before_torch(join_args: list[str]) -> None:
    result = _cli(*join_args, "--public-addr=999.999.999.999", importtime=True)
    _one_line_error(result, "not a valid IPv4 address")
    imported = [ln.rsplit("|", 1)[-1].strip() for ln in result.stderr.splitlines()]
    assert "torch" not in imported


def test_serve_rejects_bad_addresses(tmp_path: Path) -> None:
    base = ["serve", "--run=r", f"--state-dir={tmp_path}"]
    _one_line_error(_cli(*base, "--listen=1.2.3.4:99999"), "out of range")
    _one_line_error(_cli(*base, "--port=70000"), "out of range")
    _one_line_error(_cli(*base, "--listen=:4000", "--port=4000"), "not both")
