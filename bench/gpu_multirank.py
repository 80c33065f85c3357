"""A multi-rank client on several GPUs: both layouts, identical ranks, 1-rank verification, speed.

Run under torchrun on a machine with N ≥ 2 GPUs (NCCL for tensors, gloo for commands):

    torchrun --standalone --nproc-per-node 2 bench/gpu_multirank.py --dim 1024 --layers 8

For each layout (`dp`: master copy and compute on cuda:0; `fsdp`: master copy in host memory,
FSDP2 shards on the GPUs) rank 0 trains `--steps` steps of `--batch` rows through the same
`Trainer` the client uses, applies each result (every apply checks that every rank's parameter
hash equals rank 0's: `RanksDiverged` otherwise), recomputes each result in one process as a
verifier would and scores it, and times the step and the apply. Prints one key=value line per
layout (rank 0). Without GPUs it runs on CPU processes (gloo): a dry run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from psyche_client.data.provider import TokenDataProvider
from psyche_client.training import distributed
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import DeMoConfig
from psyche_client.training.recompute import PASS_THRESHOLD, verify_result
from psyche_client.training.trainer import Trainer


class RandomTokens(TokenDataProvider):
    """Seeded random windows (speed and agreement do not need real text)."""

    def __init__(self, seq_len: int, vocab: int, n: int = 4096) -> None:
        self.seq_len = seq_len
        self.rows = np.random.default_rng(0).integers(0, vocab, (n, seq_len + 1), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, index: int) -> np.ndarray:
        return self.rows[index]


def layout_run(args: argparse.Namespace, session: distributed.Session, layout: str) -> str:
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.dim,
        intermediate_size=args.dim * 8 // 3 // 64 * 64,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.dim // 64),
        num_key_value_heads=max(1, args.dim // 128),
        max_position_embeddings=args.seq,
    )
    device = session.device if layout == "dp" else torch.device("cpu")
    session.mode = layout
    demo = DeMoConfig(lr=1e-3)
    data = RandomTokens(args.seq, args.vocab)
    trainer = Trainer(build_model(cfg, seed=0).to(device), demo, data, args.micro_batch)
    assert trainer.engine is not None
    verifier = build_model(cfg, seed=0).to(device)  # a 1-rank verifier, where the master is
    scores, step_s, apply_s = [], [], []
    for step in range(args.steps):
        indices = list(range(step * args.batch, (step + 1) * args.batch))
        momentum = {n: m.clone() for n, m in trainer.demo.momentum.items()}
        verifier.load_state_dict(trainer.model.state_dict())
        _sync(session)
        t0 = time.perf_counter()
        out = trainer.train_step(indices)
        _sync(session)
        step_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer.apply([out.result])  # raises RanksDiverged if any rank differs
        _sync(session)
        apply_s.append(time.perf_counter() - t0)
        batch = data.get_batch(indices)
        report = verify_result(
            verifier, batch, momentum, out.result, demo, micro_batch=args.micro_batch
        )
        scores.append(report.score)
    params = sum(p.numel() for p in trainer.model.parameters())
    step, apply = np.median(step_s[1:] or step_s), np.median(apply_s[1:] or apply_s)
    return (
        f"layout={layout} ranks={session.world} params={params} batch={args.batch} "
        f"seq={args.seq} step_s={step:.4f} apply_s={apply:.4f} "
        f"min_score={min(scores):.4f} pass={min(scores) >= PASS_THRESHOLD} ranks_identical=True"
    )


def _sync(session: distributed.Session) -> None:
    if session.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--layouts", default="dp,fsdp")
    args = ap.parse_args()
    session = distributed.start("dp", check_every=1)
    if session is None:
        raise SystemExit("run under torchrun with --nproc-per-node ≥ 2")
    if session.rank > 0:
        distributed.serve(session)
        return
    try:
        for layout in args.layouts.split(","):
            print(layout_run(args, session, layout), flush=True)
    finally:
        session.close()


if __name__ == "__main__":
    main()
