"""Where this client's training runs: device, and its rank when it trains data-parallel.

Uses `accelerate` so the same client code runs on one CPU, one GPU, or several GPUs started with
`accelerate launch` (or torchrun): accelerate reads the launcher's environment (RANK,
WORLD_SIZE, MASTER_ADDR, ...), initialises torch.distributed with the right backend (NCCL on
GPUs, gloo on CPU) and picks this process's device. `Trainer` then shards each assigned batch
over the ranks and all-reduces gradients before compression.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import PartialState


@dataclass(frozen=True)
class Placement:
    device: torch.device
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Only the main rank talks to the network (broadcasts the result, applies, saves)."""
        return self.rank == 0


def init_placement(cpu: bool = False) -> Placement:
    """Initialises (once) and returns this process's placement. `cpu=True` forces the CPU."""
    state = PartialState(cpu=cpu)
    return Placement(torch.device(state.device), state.process_index, state.num_processes)
