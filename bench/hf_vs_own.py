"""Tokens/s of the client's own Llama (training/model.py) vs transformers' LlamaForCausalLM
(through training/hf.py) on the same tiny config, same weights, same batches.

Measured: a training step's forward + backward (`compute_gradients`, what the trainer and the
verifier run), both models timed step by step, interleaved (own, hf, own, hf, ...) so load from
other processes on a shared machine hits both alike; the median step is reported. Also: the
logits are compared (the two must compute the same thing), and the one-off cost of importing
transformers and building the config (each client process pays it once, at warmup).

`ratio` = own tokens/s ÷ transformers tokens/s (> 1: the own model is faster).
The last line is `key=value` figures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from psyche_client.training.model import LlamaConfig, build_model, config_from_dict
from psyche_client.training.trainer import compute_gradients


def _import_seconds() -> float:
    """Wall time of `import transformers` + one HFConfig, in a fresh interpreter (median of 3)."""
    code = (
        "import time, torch; t = time.perf_counter(); "
        "from psyche_client.training.model import config_from_dict; "
        "config_from_dict({'model_type': 'llama', 'hidden_size': 64, 'intermediate_size': 64, "
        "'num_hidden_layers': 1, 'num_attention_heads': 4, 'vocab_size': 256}); "
        "print(time.perf_counter() - t)"
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for _ in range(3)
    ]
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps of each model")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--dim", type=int, default=64, help="hidden size (64: `model init`'s)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--quick", action="store_true", help="5 steps (smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup = 5, 1
    torch.set_num_threads(args.threads)

    native = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.dim,
        intermediate_size=args.dim * 8 // 3 // 8 * 8 or 8,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.seq,
    )
    own = build_model(native, seed=0).to(args.device)
    d = native.to_hf_dict()
    del d["psyche_impl"]  # the same config, built by transformers
    hf = build_model(config_from_dict(d), init=False)
    hf.load_state_dict(own.state_dict())
    hf = hf.to(args.device)

    g = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
        for _ in range(args.steps + args.warmup)
    ]
    with torch.no_grad():
        x = batches[0][:, :-1].to(args.device)
        same = bool(torch.equal(own(x)[0], hf(x)[0]))
        diff = float((own(x)[0] - hf(x)[0]).abs().max())

    times: dict[str, list[float]] = {"own": [], "hf": []}
    for i, batch in enumerate(batches):
        for name, model in (("own", own), ("hf", hf)):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            compute_gradients(model, batch)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    tokens = args.batch * args.seq
    tps = {k: tokens / statistics.median(v) for k, v in times.items()}
    imp = _import_seconds()
    print(
        f"model: {own.num_parameters():,} parameters, batch {args.batch}x{args.seq}, "
        f"{args.threads} thread(s), {args.device}"
    )
    print(f"own Llama          {tps['own']:10.0f} tokens/s")
    print(f"transformers Llama {tps['hf']:10.0f} tokens/s")
    print(
        f"logits identical: {same} (max |diff| {diff:.3g}); transformers import + config "
        f"{imp:.2f} s per process"
    )
    print(
        f"own_tps={tps['own']:.0f} hf_tps={tps['hf']:.0f} ratio={tps['own'] / tps['hf']:.3f} "
        f"identical={int(same)} import_s={imp:.2f} params={own.num_parameters()}"
    )


if __name__ == "__main__":
    main()
