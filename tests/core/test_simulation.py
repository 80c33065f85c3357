"""The large-run simulation (bench/simulate.py), shortened: it must finish with no violation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[2] / "bench" / "simulate.py"


@pytest.mark.parametrize(
    "args",
    [
        ["--epochs", "4", "--clients", "64", "--initial", "48", "--seed", "7"],
        ["--epochs", "3", "--clients", "128", "--initial", "100", "--liars", "0.2", "--seed", "8"],
        ["--epochs", "3", "--clients", "32", "--initial", "20", "--cheaters", "0.2", "--seed", "9"],
    ],
)
def test_simulation_runs_clean(args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, str(SIM), *args], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    fields = dict(kv.split("=", 1) for kv in last.split())
    assert fields["invariant_violations"] == "0"
    assert int(fields["epochs"]) == int(args[1])
    assert int(fields["rounds"]) > 0
