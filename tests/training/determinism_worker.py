"""One simulated client for the three-process determinism test (run as a subprocess).

Each process trains on its own batch, publishes its encoded result as a file (atomic rename),
waits for the other clients' files, decodes them all and applies them in client-id order (the
order the coordinator would decide), then prints the parameter hash. Processes deliberately use
different torch thread counts: the apply path must not depend on it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    client, n_clients, steps, exchange, corpus = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        Path(sys.argv[4]),
        sys.argv[5:],
    )
    torch.set_num_threads(1 + client % 2)
    from psyche_client.data.local import LocalTokenProvider
    from psyche_client.training.hashing import param_hash
    from psyche_client.training.model import LlamaConfig, build_model
    from psyche_client.training.optimizer import DeMoConfig
    from psyche_client.training.result import decode_result
    from psyche_client.training.trainer import Trainer

    cfg = LlamaConfig(
        hidden_size=48,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    data = LocalTokenProvider(corpus, seq_len=32, shuffle_seed=3)
    trainer = Trainer(build_model(cfg, seed=0), DeMoConfig(lr=1e-2, chunk_size=16, topk=4), data)
    for step in range(steps):
        batch = [(step * n_clients + client) * 4 + i for i in range(4)]
        out = trainer.train_step(batch)
        tmp = exchange / f".s{step}c{client}"
        tmp.write_bytes(out.result.to_bytes())
        os.replace(tmp, exchange / f"s{step}c{client}.bin")
        payloads = []
        for c in range(n_clients):
            f = exchange / f"s{step}c{c}.bin"
            deadline = time.monotonic() + 120
            while not f.exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"client {client}: timed out waiting for {f.name}")
                time.sleep(0.01)
            payloads.append(decode_result(f.read_bytes()))
        trainer.apply(payloads)
        print(json.dumps({"step": step, "loss": out.loss, "hash": param_hash(trainer.model)}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
