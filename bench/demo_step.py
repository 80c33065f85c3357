"""The DeMo step against forward+backward and an AdamW step, measured side by side.

DeMo step = what a client does per round besides forward+backward: compress its gradients
(`DeMo.compress`: momentum update, DCT, top-k, error feedback), encode its result to bytes,
decode the `--peers` agreed results (its own and the others') and apply them (`DeMo.apply`).
The other peers' payloads are made once beforehand from random gradients of the same model.

Each repetition times, in turn, forward+backward on one batch, an AdamW step on those gradients
and the DeMo step on the same gradients, so load from other processes on a shared machine hits
all three alike; medians over the repetitions are reported, and the ratios come from the same
run. The last line of each size is `key=value` figures.

CPU (the issue's setting: one thread, 4 peers):
  .venv/bin/python bench/demo_step.py                      # 0.7M, 10M, 40M
GPU (one short device session; bf16 model, fp32 momentum; also checks that a CUDA apply and a
CPU apply of the same results give bit-identical parameters):
  python bench/demo_step.py --device cuda --dtype bf16     # 25M, 308M
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, build_model, input_embedding_names
from psyche_client.training.optimizer import DeMo, DeMoConfig
from psyche_client.training.result import DeMoResult
from psyche_client.training.trainer import compute_gradients

# name → (hidden, SwiGLU width, layers, heads); vocab 256 (byte-level), untied head.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "0.7M": (128, 352, 3, 4),
    "10M": (384, 1024, 6, 6),
    "25M": (512, 1408, 8, 8),
    "40M": (640, 1728, 8, 10),
    "308M": (1024, 2816, 24, 16),
}
DEFAULT_SIZES = {"cpu": ["0.7M", "10M", "40M"], "cuda": ["25M", "308M"]}


def model_config(size: str, seq: int) -> LlamaConfig:
    dim, ffn, layers, heads = SIZES[size]
    return LlamaConfig(
        vocab_size=256,
        hidden_size=dim,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=seq,
        tie_word_embeddings=False,
    )


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def peer_payloads(model: torch.nn.Module, cfg: DeMoConfig, n: int, seed: int) -> list[bytes]:
    """`n` results of other peers: one DeMo state fed random gradients, a step per payload."""
    other = DeMo(model.named_parameters(), cfg)
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(n):
        grads = {
            name: torch.randn(p.shape, generator=g).to(p.device, p.dtype)
            for name, p in other.params.items()
        }
        out.append(other.compress(grads).to_bytes())
    return out


def run_size(size: str, args: argparse.Namespace) -> dict[str, float]:
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = build_model(model_config(size, args.seq), seed=0).to(device=device, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = DeMoConfig(lr=1e-3, chunk_size=args.chunk, topk=args.topk)
    demo = DeMo(model.named_parameters(), cfg, input_embedding_names(model))
    others = peer_payloads(model, cfg, args.peers - 1, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {
        k: [] for k in ("fwd_bwd", "adamw", "compress", "encode", "decode", "apply")
    }
    last: list[DeMoResult] = []
    for rep in range(args.warmup + args.reps):
        batch = torch.randint(0, 256, (args.batch, args.seq + 1), generator=g)
        t_fb, (grads, _) = timed(lambda: compute_gradients(model, batch), device)  # noqa: B023

        def adamw() -> None:
            for name, p in model.named_parameters():
                p.grad = grads[name]  # noqa: B023
            opt.step()
            opt.zero_grad(set_to_none=True)

        t_adamw, _ = timed(adamw, device)
        t_c, result = timed(lambda: demo.compress(grads), device)  # noqa: B023
        t_e, payload = timed(lambda: result.to_bytes(), device)  # noqa: B023
        t_d, decoded = timed(
            lambda: [DeMoResult.from_bytes(p) for p in [payload, *others]],  # noqa: B023
            device,
        )
        t_a, _ = timed(lambda: demo.apply(decoded), device)  # noqa: B023
        last = decoded
        if rep >= args.warmup:
            for v, t in zip(times.values(), (t_fb, t_adamw, t_c, t_e, t_d, t_a), strict=True):
                v.append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["demo_step"] = med["compress"] + med["encode"] + med["decode"] + med["apply"]
    ratio = (med["fwd_bwd"] + med["demo_step"]) / (med["fwd_bwd"] + med["adamw"])
    line = (
        f"size={size} params={n_params} device={args.device} dtype={args.dtype} "
        f"threads={torch.get_num_threads()} peers={args.peers} batch={args.batch}x{args.seq} "
        + " ".join(f"{k}_s={v:.4f}" for k, v in med.items())
        + f" demo_over_fwd_bwd={med['demo_step'] / med['fwd_bwd']:.3f}"
        + f" demo_over_adamw={med['demo_step'] / med['adamw']:.2f}"
        + f" client_over_plain={ratio:.3f}"
    )
    print(line, flush=True)
    if device.type == "cuda" and args.check:
        check_cpu_matches(model, demo, last, cfg)
    return med


def check_cpu_matches(
    model: torch.nn.Module, demo: DeMo, results: list[DeMoResult], cfg: DeMoConfig
) -> None:
    """Applies the same results to a CPU copy and to the CUDA model: the hashes must agree."""
    cpu = {n: p.detach().to("cpu").clone() for n, p in model.named_parameters()}
    cpu_demo = DeMo(
        ((n, torch.nn.Parameter(t)) for n, t in cpu.items()), cfg, demo.lr_scales.keys()
    )
    cpu_demo.apply(results)
    demo.apply(results)
    same = param_hash(cpu_demo.params) == param_hash(demo.params)
    print(f"cuda_cpu_apply_identical={same}", flush=True)
    if not same:
        raise SystemExit("CUDA and CPU applies of the same results differ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), help="default: by device")
    ap.add_argument("--batch", type=int, help="samples per step (default: 8 CPU, 32 GPU)")
    ap.add_argument("--seq", type=int, help="tokens per sample (default: 256 CPU, 512 GPU)")
    ap.add_argument("--peers", type=int, default=4, help="results applied per step")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--topk", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip CUDA≡CPU check")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    if args.peers < 1 or args.reps < 1:
        raise SystemExit("--peers and --reps must be at least 1")
    gpu = args.device == "cuda"
    args.batch = args.batch or (32 if gpu else 8)
    args.seq = args.seq or (512 if gpu else 256)
    torch.set_num_threads(args.threads)
    for size in args.sizes or DEFAULT_SIZES[args.device]:
        run_size(size, args)


if __name__ == "__main__":
    main()
