"""Tokens/s of a plain torch training loop vs the Psyche client's train step, same model and batch.

plain : fetch batch → forward → backward → AdamW step
client: Trainer.train_step (fetch → forward → backward → DeMo compress → result) + encode the
        result to bytes + apply `--peers` results (as every client does each round)

Both are timed step by step, interleaved (plain, client, plain, client, ...) so that load from
other processes on a shared machine hits both alike; the median step time is reported.
`overhead_ratio` = client step time / plain step time (1.0 = free; the DeMo work is a fixed cost
per parameter, so it shrinks relative to the gradient as the batch grows).

The last line is `key=value` figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from psyche_client.data.corpus import make_corpus
from psyche_client.data.local import LocalTokenProvider
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import DeMoConfig
from psyche_client.training.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps of each kind")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=352)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--peers", type=int, default=4, help="results applied per client step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="10 steps (smoke test)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup = 10, 1
    torch.set_num_threads(args.threads)

    cfg = LlamaConfig(
        hidden_size=args.dim,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.seq,
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = make_corpus(
            tmp, n_tokens=(args.steps + args.warmup + 2) * args.batch * args.seq * 2
        )
        data = LocalTokenProvider(files, seq_len=args.seq)

        plain_model = build_model(cfg, seed=0).to(args.device)
        opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-3)
        trainer = Trainer(build_model(cfg, seed=0).to(args.device), DeMoConfig(), data)

        def sync() -> None:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        def plain_step(i: int) -> float:
            t0 = time.perf_counter()
            batch = data.get_batch(range(i * args.batch, (i + 1) * args.batch)).to(args.device)
            _, loss = plain_model(batch[:, :-1], batch[:, 1:])
            assert loss is not None
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            return time.perf_counter() - t0

        def client_step(i: int) -> tuple[float, float, int]:
            t0 = time.perf_counter()
            out = trainer.train_step(list(range(i * args.batch, (i + 1) * args.batch)))
            payload = out.result.to_bytes()
            t1 = time.perf_counter()
            trainer.apply([out.result] * args.peers)
            sync()
            t2 = time.perf_counter()
            return t2 - t0, t2 - t1, len(payload)

        plain_t: list[float] = []
        client_t: list[float] = []
        apply_t: list[float] = []
        size = 0
        for i in range(args.warmup + args.steps):
            p = plain_step(i)
            c, a, size = client_step(i)
            if i >= args.warmup:
                plain_t.append(p)
                client_t.append(c)
                apply_t.append(a)

    tokens = args.batch * args.seq
    plain_s, client_s = statistics.median(plain_t), statistics.median(client_t)
    print(
        f"params={plain_model.num_parameters()} tokens_per_step={tokens} peers={args.peers} "
        f"threads={args.threads} steps={args.steps} device={args.device}"
    )
    print(
        f"plain_tokens_per_s={tokens / plain_s:.0f} client_tokens_per_s={tokens / client_s:.0f} "
        f"plain_step_ms={plain_s * 1e3:.1f} client_step_ms={client_s * 1e3:.1f} "
        f"apply_ms={statistics.median(apply_t) * 1e3:.1f} result_bytes={size} "
        f"overhead_ratio={client_s / plain_s:.3f}"
    )


if __name__ == "__main__":
    main()
