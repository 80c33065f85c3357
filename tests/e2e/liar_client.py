"""A lying client for the e2e tests: the real `psyche-client` command line, with the trainer
patched so every result it sends is well-formed garbage (random coefficients under a valid
commitment, with its honest momentum disclosed). Verifiers must catch it by recomputation.

With `--craft` first it lies more cleverly (issue 14): before each step it plants large
coefficients of random sign in its momentum, so the step's result carries them (a chosen
direction), and it discloses that crafted momentum. The result then recomputes exactly from the
disclosure; only the momentum chain check (client/audit.py) can tell that the momentum does not
follow from the client's previous step.

Run as `python tests/e2e/liar_client.py [--craft] join ...` (arguments as for `psyche-client`).
The fault lives here, in the tests, so nothing of it ships in the package.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence

import torch

from psyche_client.training.result import DeMoResult, ParamComponent, index_dtype


def garbage_like(result: DeMoResult, seed: int) -> DeMoResult:
    """A result with `result`'s layout and random coefficients: what a liar sends."""
    gen = torch.Generator().manual_seed(seed)
    out = DeMoResult(value_mode=result.value_mode)
    for name, comp in result.params.items():
        rows, k = comp.indices.shape
        numel = comp.chunk_numel
        idx = torch.stack([torch.randperm(numel, generator=gen)[:k] for _ in range(rows)])
        idx, _ = torch.sort(idx, dim=1)
        if comp.values.dtype == torch.int8:
            values = (torch.randint(0, 2, (rows, k), generator=gen) * 2 - 1).to(torch.int8)
        else:
            values = torch.randn(rows, k, generator=gen).to(comp.values.dtype)
        out.params[name] = ParamComponent(
            comp.shape, comp.chunk, idx.to(index_dtype(numel)), values
        )
    return out


def make_trainer_lie() -> None:
    """Replace `Trainer.train_step` so its result (what gets published) is garbage."""
    from psyche_client.training.trainer import Trainer

    honest = Trainer.train_step
    seeds = itertools.count(1)

    def lying_train_step(self: Trainer, indices: Sequence[int], *args, **kwargs):  # type: ignore[no-untyped-def]
        out = honest(self, indices, *args, **kwargs)  # (the step's lr, where the trainer takes one)
        out.result = garbage_like(out.result, seed=next(seeds))
        return out

    Trainer.train_step = lying_train_step  # type: ignore[method-assign]


def craft_momentum(momentum: dict[str, torch.Tensor], seed: int, per_row: int = 2) -> None:
    """Plant `per_row` coefficients of random sign per row of the last dimension, far above the
    rest, in place: a momentum whose next result sends them (top-k picks among them wherever
    they fall in a chunk), whatever the gradient."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in momentum.values():
            numel = int(m.shape[-1])
            rows = m.view(-1, numel)
            big = 1e4 * (float(rows.abs().max()) + 1.0)
            n = min(per_row, numel)
            idx = torch.stack([torch.randperm(numel, generator=gen)[:n] for _ in range(len(rows))])
            sign = torch.randint(0, 2, idx.shape, generator=gen).to(rows.dtype) * 2 - 1
            rows.scatter_(1, idx, sign * big)


def make_momentum_crafted() -> None:
    """Craft the momentum just before the client encodes its disclosure (client/train.py)."""
    from psyche_client.client import train as train_module

    honest = train_module.encode_momentum
    seeds = itertools.count(1)

    def crafting_encode(momentum: dict[str, torch.Tensor]) -> memoryview:
        craft_momentum(momentum, seed=next(seeds))
        return honest(momentum)

    train_module.encode_momentum = crafting_encode  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--craft"]:
        argv = argv[1:]
        make_momentum_crafted()
    else:
        make_trainer_lie()
    from psyche_client.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
