"""One rank of the two-process data-parallel test (gloo on CPU), run as a subprocess.

Sets the environment `accelerate launch` would set, lets `init_placement` (accelerate)
initialise torch.distributed, trains one step and writes its result and post-apply parameter
hash to the output directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    corpus = sys.argv[5:]
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=port,
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",
    )
    from psyche_client.training.placement import init_placement

    placement = init_placement(cpu=True)
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    assert (placement.rank, placement.world_size) == (rank, world)
    from psyche_client.data.local import LocalTokenProvider
    from psyche_client.training.hashing import param_hash
    from psyche_client.training.model import LlamaConfig, build_model
    from psyche_client.training.optimizer import DeMoConfig
    from psyche_client.training.trainer import Trainer

    cfg = LlamaConfig(
        hidden_size=48,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    trainer = Trainer(
        build_model(cfg, seed=0), DeMoConfig(lr=1e-2), LocalTokenProvider(corpus, seq_len=32)
    )
    step = trainer.train_step(list(range(8)))
    (out / f"result{rank}.bin").write_bytes(step.result.to_bytes())
    trainer.apply([step.result])
    (out / f"hash{rank}.txt").write_text(param_hash(trainer.model))
    (out / f"tokens{rank}.txt").write_text(str(step.tokens))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
