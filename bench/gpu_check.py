"""The training engine on an accelerator: determinism of apply, honest verification, speed.

Same code as on CPU, moved to `--device` (cuda on a GPU machine). For each value mode it trains
`--clients` simulated clients for `--steps` steps from one seed (each its own DeMo momentum,
each its own batch), applies all results in a fixed order, and hashes the parameters; it does
this twice in one process and reports whether the two runs are bit-identical (deterministic
kernels), then checks that a recomputed honest result scores 1.0, and times a train step.
Prints a last line of key=value figures.

    python bench/gpu_check.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, build_model, input_embedding_names
from psyche_client.training.optimizer import DeMo, DeMoConfig
from psyche_client.training.recompute import verify_result
from psyche_client.training.result import ValueMode, decode_result, encode_result
from psyche_client.training.trainer import compute_gradients


def batches(n: int, batch: int, seq: int, vocab: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, seq + 1), generator=gen) for _ in range(n)]


def run(args: argparse.Namespace, mode: ValueMode, dtype: torch.dtype) -> tuple[str, float, float]:
    """Train and apply; returns (hash, honest verification score, seconds per client step)."""
    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=args.dim,
        intermediate_size=args.dim * 8 // 3 // 64 * 64,
        num_hidden_layers=args.layers,
        num_attention_heads=args.dim // 64,
        num_key_value_heads=args.dim // 64,
        max_position_embeddings=args.seq,
    )
    model = build_model(cfg, seed=0, dtype=dtype).to(args.device)
    demo_cfg = DeMoConfig(lr=1e-3, chunk_size=16, topk=4, value_mode=mode)
    embeddings = input_embedding_names(model)
    clients = [DeMo(model.named_parameters(), demo_cfg, embeddings) for _ in range(args.clients)]
    data = batches(args.steps * args.clients, args.batch, args.seq, 256, seed=1)
    step_s = []
    score = 1.0
    for step in range(args.steps):
        results = []
        for c, demo in enumerate(clients):
            batch = data[step * args.clients + c].to(args.device)
            momentum_before = {n: m.clone() for n, m in demo.momentum.items()}
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            grads, _loss = compute_gradients(model, batch)
            result = demo.compress(grads)
            if args.device == "cuda":
                torch.cuda.synchronize()
            step_s.append(time.perf_counter() - t0)
            results.append(decode_result(encode_result(result)))  # through the wire format
            if step == args.steps - 1 and c == 0:
                score = verify_result(model, batch, momentum_before, results[-1], demo_cfg).score
        clients[0].apply(results)
    return (
        param_hash(model),
        score,
        sum(step_s[args.clients :]) / max(1, len(step_s) - args.clients),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument(
        "--nondeterministic",
        action="store_true",
        help="leave torch's default kernels (to see whether determinism needs the switch)",
    )
    args = ap.parse_args()
    if not args.nondeterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    figures = {}
    for label, mode, dtype in [
        ("sign_fp32", ValueMode.SIGN, torch.float32),
        ("fp32_fp32", ValueMode.FP32, torch.float32),
        ("sign_bf16", ValueMode.SIGN, torch.bfloat16),
    ]:
        h1, score, secs = run(args, mode, dtype)
        h2, _, _ = run(args, mode, dtype)
        print(
            f"{label}: hash {h1[:16]} rerun_identical={h1 == h2} honest_score={score:.4f} "
            f"step_s={secs:.4f}",
            flush=True,
        )
        figures[f"{label}_identical"] = h1 == h2
        figures[f"{label}_score"] = round(score, 4)
        figures[f"{label}_step_s"] = round(secs, 4)
    params = build_model(
        LlamaConfig(
            hidden_size=args.dim,
            num_hidden_layers=args.layers,
            intermediate_size=args.dim * 8 // 3 // 64 * 64,
            num_attention_heads=args.dim // 64,
            num_key_value_heads=args.dim // 64,
        )
    ).num_parameters()
    print(
        f"device={name.replace(' ', '_')} params={params} "
        + " ".join(f"{k}={v}" for k, v in figures.items())
    )


if __name__ == "__main__":
    main()
