"""The multi-rank client's command line. The end-to-end run with a client of two ranks
(torchrun, gloo, FSDP2) beside 1-rank clients is in `test_hf_models.py` (the Llama-3-style
run): rank 0 is the one the coordinator and peers see; rank 1 writes its own `applied` events
(`<events>.rank1`) with the hash of the full parameters it received.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def test_unknown_parallel_layout_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "psyche_client", "join", "127.0.0.1:1", "--data=x", "--parallel=tp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--parallel" in proc.stderr, proc.stderr
