"""Atomic state persistence: round trip, and damaged files refused with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from psyche_client.server.persist import StateFileError, load_state, save_state


def test_round_trip_and_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "run" / "state.bin"
    assert load_state(path) is None
    save_state(path, b"\x01" * 1000)
    assert load_state(path) == b"\x01" * 1000
    save_state(path, b"\x02" * 10)
    assert load_state(path) == b"\x02" * 10
    assert [p.name for p in path.parent.iterdir()] == ["state.bin"]


def test_damaged_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    save_state(path, bytes(range(200)))
    blob = bytearray(path.read_bytes())
    blob[50] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(StateFileError, match="checksum"):
        load_state(path)
    path.write_bytes(bytes(blob[:100]))
    with pytest.raises(StateFileError, match="truncated"):
        load_state(path)
    path.write_bytes(b"garbage")
    with pytest.raises(StateFileError, match="not a Psyche state file"):
        load_state(path)
