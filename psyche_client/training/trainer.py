"""One client training step: assigned sample indices → gradients → DeMo result, with accounting.

The client loop calls `train_step(indices)` for round h, broadcasts the returned result, and later
calls `apply(results)` with the agreed results of an earlier round. Gradients are the mean over
the assigned batch, computed in micro-batches (to bound activation memory) whose losses are
weighted by their share of samples, so the gradient does not depend on the micro-batch size
beyond rounding.

Several processes, one client (`torchrun … -m psyche_client join`): when this process leads a
multi-rank client (`distributed.active()`), the trainer hands each step's batch to its
`distributed.Engine`, which has every rank train a slice and sums the gradients onto this rank
before the (rank-0-only) DeMo compression, and applies the agreed results on every rank.

(SPMD scripts that initialise torch.distributed themselves, e.g. `accelerate launch`, and call
`train_step` on every rank, get the older behaviour instead: each process trains its slice and
gradients are all-reduced, so every process compresses the same result.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from psyche_client.data.provider import TokenDataProvider
from psyche_client.training import distributed
from psyche_client.training.model import LlamaForCausalLM, input_embedding_names
from psyche_client.training.optimizer import DeMo, DeMoConfig
from psyche_client.training.result import DeMoResult


@dataclass
class StepOutput:
    """What one train step produced and what it cost."""

    result: DeMoResult
    loss: float  # mean next-token cross-entropy over the batch (this process's share, SPMD)
    tokens: int  # tokens processed by this client (this process, SPMD)
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def compute_gradients(
    model: LlamaForCausalLM, batch: torch.Tensor, micro_batch: int | None = None
) -> tuple[dict[str, torch.Tensor], float]:
    """Mean-loss gradients of `model` on `batch` ((B, seq_len + 1) tokens) and the mean loss.

    Leaves the gradients in a fresh dict and clears `.grad`, so callers (trainer, verifier) never
    see each other's leftovers.
    """
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    b = batch.shape[0]
    mb = micro_batch or b
    total = 0.0
    for start in range(0, b, mb):
        part = batch[start : start + mb].to(device)
        _, loss = model(part[:, :-1], part[:, 1:])
        assert loss is not None
        (loss * (part.shape[0] / b)).backward()
        total += loss.item() * part.shape[0]
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads, total / b


def _shard(indices: Sequence[int]) -> Sequence[int]:
    """This process's slice of the batch when running data-parallel."""
    if not (dist.is_available() and dist.is_initialized()):
        return indices
    return indices[dist.get_rank() :: dist.get_world_size()]


def _all_reduce_mean(grads: dict[str, torch.Tensor], weight: float) -> None:
    """Sums weight·grad over processes; weights are each process's share of the batch."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for g in grads.values():
        g.mul_(weight)
        dist.all_reduce(g, op=dist.ReduceOp.SUM)


class Trainer:
    """A model, its DeMo state and a data provider: the training half of a client."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        demo_cfg: DeMoConfig,
        data: TokenDataProvider,
        micro_batch: int | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.micro_batch = micro_batch
        self.demo = DeMo(model.named_parameters(), demo_cfg, input_embedding_names(model))
        session = distributed.active()
        self.engine = distributed.Engine(session, model, demo_cfg, micro_batch) if session else None

    def train_step(self, indices: Sequence[int], lr: float | None = None) -> StepOutput:
        """Trains on the assigned samples and returns the compressed result to broadcast. `lr`:
        the step's learning rate (`DeMoConfig.lr_at(step)`; default the config's lr)."""
        if not indices:
            raise ValueError("a train step needs at least one sample index")
        t0 = time.perf_counter()
        if self.engine is not None:
            batch = self.data.get_batch(list(indices))
            summed, loss, tokens = self.engine.gradients(batch)
            result = self.demo.compress(summed, lr=lr)
            return StepOutput(result, loss, tokens, time.perf_counter() - t0)
        mine = _shard(list(indices))
        self.model.train()
        grads: dict[str, torch.Tensor] = {}
        loss, tokens = float("nan"), 0
        if mine:  # a rank can get no sample when the batch is smaller than the world size
            batch = self.data.get_batch(mine)
            grads, loss = compute_gradients(self.model, batch, self.micro_batch)
            tokens = int(batch.shape[0] * (batch.shape[1] - 1))
        # Every parameter gets a gradient tensor, so all ranks reduce the same list in order.
        grads = {n: grads.get(n, torch.zeros_like(p)) for n, p in self.demo.params.items()}
        _all_reduce_mean(grads, len(mine) / len(indices))
        result = self.demo.compress(grads, lr=lr)
        seconds = time.perf_counter() - t0
        return StepOutput(result, loss, tokens, seconds)

    def apply(self, results: Sequence[DeMoResult], lr: float | None = None) -> None:
        """Applies the agreed results (in the coordinator's order) to the model (on every rank
        of a multi-rank client)."""
        if self.engine is not None:
            self.engine.apply(results, lr, lambda: self.demo.apply(results, lr=lr))
        else:
            self.demo.apply(results, lr=lr)

    @torch.no_grad()
    def evaluate(self, indices: Sequence[int]) -> float:
        """Mean loss on the given samples, without touching gradients or momentum."""
        self.model.eval()
        batch = self.data.get_batch(list(indices))
        _, loss = self.model(batch[:, :-1], batch[:, 1:])
        assert loss is not None
        return float(loss)
