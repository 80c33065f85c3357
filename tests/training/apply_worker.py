"""Applies saved results in a given order with a given torch thread count and prints the hash
(a subprocess of test_apply_exact.py: a separate process with its own kernels' state)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main() -> None:
    folder, threads, order = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(threads)
    from psyche_client.training.hashing import param_hash
    from psyche_client.training.optimizer import DeMo, DeMoConfig
    from psyche_client.training.result import ValueMode, decode_result

    params = torch.load(folder / "params.pt")
    cfg = DeMoConfig(lr=1e-2, chunk_size=16, topk=4, value_mode=ValueMode.SIGN)
    demo = DeMo(((n, torch.nn.Parameter(t)) for n, t in params.items()), cfg)
    results = [decode_result((folder / f"r{i}.bin").read_bytes()) for i in map(int, order)]
    demo.apply(results)
    print(json.dumps({"hash": param_hash(demo.params)}))


if __name__ == "__main__":
    main()
