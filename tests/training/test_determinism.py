"""Three independent processes apply the same agreed results and end bit-identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

N_CLIENTS = 3
STEPS = 6


def test_three_processes_hold_identical_parameters_after_every_step(
    tmp_path: Path, corpus_files: list[Path]
) -> None:
    worker = Path(__file__).with_name("determinism_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(c), str(N_CLIENTS), str(STEPS), str(tmp_path)]
            + [str(f) for f in corpus_files],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in range(N_CLIENTS)
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outputs.append([json.loads(line) for line in out.splitlines()])
    hashes = [[row["hash"] for row in rows] for rows in outputs]
    assert all(len(h) == STEPS for h in hashes)
    assert hashes[0] == hashes[1] == hashes[2]
    assert len(set(hashes[0])) == STEPS  # parameters really changed every step
    # Each client trained on different data, yet all hold the same model.
    losses = {round(rows[0]["loss"], 6) for rows in outputs}
    assert len(losses) == N_CLIENTS
