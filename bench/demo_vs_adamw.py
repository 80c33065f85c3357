"""DeMo across simulated clients vs dense AdamW: same model, same tokens, same schedule.

Both optimisers see the same global batch each step: AdamW takes the dense mean gradient over all
of it; with DeMo each of the N simulated clients takes its share, compresses its momentum, and
all N results are applied (as every honest client of a real run would). The final held-out loss
of each, their ratio, and the bytes one client sends per step (the encoded result) against the
dense bf16 gradient (2 bytes per parameter) are printed.

DeMo runs the formulation chosen in docs/decisions/0003 by default: lr-weighted momentum
(m ← β·m + lr·g) and each coefficient averaged over all peers (`--aggregate sum`), which are
also the `DeMoConfig` defaults of a client run; the schedule is the client's
(`training/schedule.py`; `--final-lr` sets where the cosine ends, 0.5 is better at 300 steps).

The last line is `key=value` figures; with the defaults (600 steps, seed 0) on the dev VM
(2026-12-04, each side run with `--only`):
  adamw_loss=0.7935 demo_loss=0.7775 loss_ratio=0.9798 bytes_per_client_step=13182
  dense_bf16_bytes=1337088 compression_ratio=101.4
(AdamW at these defaults is not at its best: lr 3e-3 with warmup 0.2 reaches 0.7714, ratio
1.008. docs/performance.md has the sweeps and how the ratio moves.)
At 300 steps the best DeMo setting found is `--demo-lr 3e-3 --final-lr 0.5 --warmup 0.3`.
With the input embedding at 2·lr (`--embedding-lr-scale`, default `DeMoConfig`'s 2.0), the ratio
to AdamW's best of three settings is 1.012 / 1.058 / 0.995 / 1.007 at 300 steps and 1.008 /
1.026 / 1.008 / 1.039 at 600 on seeds 0–3 (docs/decisions/0003, sixth sweep).

Usage: .venv/bin/python bench/demo_vs_adamw.py [--quick] [--sweep] [--steps N] ...
`--sweep` runs each optimiser over a small learning-rate grid first and keeps its best (by
held-out loss), so neither is handicapped by a badly chosen step size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch

from psyche_client.data.corpus import make_corpus
from psyche_client.data.local import LocalTokenProvider
from psyche_client.training import schedule
from psyche_client.training.model import (
    LlamaConfig,
    LlamaForCausalLM,
    build_model,
    input_embedding_names,
)
from psyche_client.training.optimizer import DeMo, DeMoConfig, clip_factor
from psyche_client.training.result import ValueMode
from psyche_client.training.trainer import compute_gradients

WARMUP_FRAC = 0.1
FINAL_FRAC = 0.1


def lr_at(
    step: int, steps: int, peak: float, warmup: float | None = None, final: float | None = None
) -> float:
    """Linear warmup over `warmup` (default 10%) of the steps, then cosine decay to `final`
    (default 10%) of peak: the client's schedule (`training.schedule`, what a run with
    `DeMoConfig(warmup_steps=…, total_steps=steps, final_lr=…)` uses), for both optimisers."""
    warm = max(1, int(steps * (WARMUP_FRAC if warmup is None else warmup)))
    return schedule.lr_at(step, peak, warm, steps, FINAL_FRAC if final is None else final)


def batch_indices(step: int, global_batch: int, n_train: int) -> list[int]:
    return [(step * global_batch + i) % n_train for i in range(global_batch)]


def clipped(grads: dict[str, torch.Tensor], max_norm: float) -> dict[str, torch.Tensor]:
    """The gradients scaled so their global L2 norm is at most `max_norm` (0: unchanged)."""
    if max_norm <= 0:
        return grads
    scale = clip_factor(grads, max_norm)
    return {n: g * scale for n, g in grads.items()}


@torch.no_grad()
def held_out_loss(model: LlamaForCausalLM, data: LocalTokenProvider, idx: list[int]) -> float:
    model.eval()
    batch = data.get_batch(idx)
    _, loss = model(batch[:, :-1], batch[:, 1:])
    model.train()
    assert loss is not None
    return float(loss)


def run_adamw(args: argparse.Namespace, data: LocalTokenProvider, lr: float, held: list[int]):
    model = build_model(model_config(args), seed=args.seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=args.weight_decay
    )
    n_train = len(data) - len(held)
    gb = args.clients * args.batch
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, lr, args.warmup, args.final_lr)
        grads, _ = compute_gradients(model, data.get_batch(batch_indices(step, gb, n_train)))
        grads = clipped(grads, args.clip)
        for name, p in model.named_parameters():
            p.grad = grads.get(name)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _log(args, "adamw", step, model, data, held)
    return held_out_loss(model, data, held), model.num_parameters()


def demo_config(args: argparse.Namespace, lr: float) -> DeMoConfig:
    return DeMoConfig(
        lr=lr,
        momentum_decay=args.beta,
        chunk_size=args.chunk,
        topk=args.topk,
        weight_decay=args.weight_decay,
        value_mode=ValueMode[args.values.upper()],
        lr_weighted=args.lr_weighted,
        aggregate=args.aggregate,
        grad_clip=args.clip,
        embedding_lr_scale=args.embedding_lr_scale,
    )


def run_demo(args: argparse.Namespace, data: LocalTokenProvider, lr: float, held: list[int]):
    model = build_model(model_config(args), seed=args.seed)
    cfg = demo_config(args, lr)
    # N clients over one shared model: every honest client would hold these same parameters.
    embeddings = input_embedding_names(model)
    clients = [DeMo(model.named_parameters(), cfg, embeddings) for _ in range(args.clients)]
    n_train = len(data) - len(held)
    gb = args.clients * args.batch
    sent = 0
    model.train()
    for step in range(args.steps):
        idx = batch_indices(step, gb, n_train)
        step_lr = lr_at(step, args.steps, lr, args.warmup, args.final_lr)
        results = []
        for c, demo in enumerate(clients):
            batch = data.get_batch(idx[c * args.batch : (c + 1) * args.batch])
            grads, _ = compute_gradients(model, batch)
            res = demo.compress(grads, lr=step_lr)
            sent += len(res.to_bytes())
            results.append(res)
        clients[0].apply(results, lr=step_lr)
        _log(args, "demo", step, model, data, held)
    per_client_step = sent / (args.steps * args.clients)
    return held_out_loss(model, data, held), per_client_step


def _log(
    args: argparse.Namespace,
    label: str,
    step: int,
    model: LlamaForCausalLM,
    data: LocalTokenProvider,
    held: list[int],
) -> None:
    if args.log_every and (step + 1) % args.log_every == 0:
        print(f"{label} step={step + 1} held_out_loss={held_out_loss(model, data, held):.4f}")


def model_config(args: argparse.Namespace) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=256,
        hidden_size=args.dim,
        intermediate_size=args.ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.seq,
        tie_word_embeddings=args.tied,
    )


def best_lr(fn: Callable[[float], float], grid: list[float], label: str) -> float:
    scores = {}
    for lr in grid:
        scores[lr] = fn(lr)
        print(f"sweep {label} lr={lr:g} held_out_loss={scores[lr]:.4f}", flush=True)
    return min(scores, key=lambda k: scores[k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 steps, smaller model (smoke test)")
    ap.add_argument("--sweep", action="store_true", help="tune each optimiser's lr on a grid")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4, help="samples per client per step")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=352)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument(
        "--tied",
        action="store_true",
        help="tie LM head to embedding (small byte-level models then plateau near the unigram "
        "loss for ~100 steps, which makes 300-step comparisons noisy)",
    )
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--topk", type=int, default=4)
    ap.add_argument("--values", choices=["sign", "bf16", "fp32"], default="sign")
    ap.add_argument("--beta", type=float, default=0.999)
    ap.add_argument("--warmup", type=float, default=WARMUP_FRAC, help="warmup fraction of steps")
    ap.add_argument(
        "--final-lr", type=float, default=FINAL_FRAC, help="final lr as a fraction of the peak"
    )
    ap.add_argument(
        "--lr-weighted",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="momentum accumulates lr·g (the DeMo paper's algorithm; docs/decisions/0003)",
    )
    ap.add_argument(
        "--aggregate",
        choices=["mean", "sum"],
        default="sum",
        help="average each coefficient over all peers (sum) or over those that picked it (mean)",
    )
    ap.add_argument(
        "--clip",
        type=float,
        default=1.0,
        help="clip each gradient's global norm (0: off): AdamW's here, DeMo's by its grad_clip",
    )
    ap.add_argument(
        "--embedding-lr-scale",
        type=float,
        default=DeMoConfig.embedding_lr_scale,
        help="DeMo's step on the input embedding as a multiple of its lr",
    )
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--adamw-lr", type=float, default=2e-3)
    ap.add_argument("--demo-lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=0, help="print held-out loss every N steps")
    ap.add_argument("--only", choices=["adamw", "demo"], help="run one side (for parallel sweeps)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.dim, args.ffn, args.layers = 60, 64, 176, 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        n_tokens = max(200_000, args.steps * args.clients * args.batch * args.seq + 50_000)
        files = make_corpus(tmp, n_tokens=n_tokens, seed=args.seed, n_files=2)
        data = LocalTokenProvider(files, seq_len=args.seq, shuffle_seed=args.seed)
        held = list(range(len(data) - 64, len(data)))
        t0 = time.perf_counter()
        if args.sweep:
            args.adamw_lr = best_lr(
                lambda lr: run_adamw(args, data, lr, held)[0],
                [5e-4, 1e-3, 2e-3, 3e-3, 1e-2],
                "adamw",
            )
            args.demo_lr = best_lr(
                lambda lr: run_demo(args, data, lr, held)[0], [7e-4, 1e-3, 2e-3, 3e-3, 4e-3], "demo"
            )
        if args.only == "demo":
            adamw_loss, n_params = float("nan"), build_model(model_config(args)).num_parameters()
        else:
            adamw_loss, n_params = run_adamw(args, data, args.adamw_lr, held)
        if args.only == "adamw":
            demo_loss, per_client = float("nan"), float("nan")
        else:
            demo_loss, per_client = run_demo(args, data, args.demo_lr, held)
        seconds = time.perf_counter() - t0
    dense_bf16 = 2 * n_params
    print(
        f"params={n_params} steps={args.steps} clients={args.clients} "
        f"tokens_per_step={args.clients * args.batch * args.seq} chunk={args.chunk} "
        f"topk={args.topk} values={args.values} beta={args.beta} seed={args.seed} "
        f"tied={args.tied} batch_per_client={args.batch} seq={args.seq} "
        f"adamw_lr={args.adamw_lr:g} demo_lr={args.demo_lr:g} warmup={args.warmup:g} "
        f"final_lr={args.final_lr:g} clip={args.clip:g} emb_scale={args.embedding_lr_scale:g} "
        f"lr_weighted={args.lr_weighted} aggregate={args.aggregate} seconds={seconds:.0f}"
    )
    print(
        f"adamw_loss={adamw_loss:.4f} demo_loss={demo_loss:.4f} "
        f"loss_ratio={demo_loss / adamw_loss:.4f} bytes_per_client_step={per_client:.0f} "
        f"dense_bf16_bytes={dense_bf16} compression_ratio={dense_bf16 / per_client:.1f}"
    )


if __name__ == "__main__":
    main()
