"""Device check (not a pytest test): DeMo across CPU and GPU clients, run on a GPU machine.

Three clients of one run train together: client 0 on CUDA, clients 1 and 2 on the CPU. Each
computes its result on its own hardware, all results are exchanged as bytes and every client
applies all of them in client order. The check reports, per step, whether the three parameter
hashes agree (cross-hardware determinism of `apply_results`) and the verification score of the
GPU client's result recomputed on the CPU and vice versa (the cross-hardware tolerance that
verify.py's threshold must cover), for 1-bit and fp32 values.
Usage: python tests/training/device_check.py [steps]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile

import torch

from psyche_client.data.corpus import make_corpus
from psyche_client.data.local import LocalTokenProvider
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import DeMoConfig, compress_step
from psyche_client.training.recompute import score_results
from psyche_client.training.result import ValueMode, decode_result
from psyche_client.training.trainer import Trainer, compute_gradients

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    torch.set_num_threads(2)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (default, made explicit)
    torch.backends.cudnn.allow_tf32 = False
    cfg = LlamaConfig(
        hidden_size=128, intermediate_size=352, num_hidden_layers=3, max_position_embeddings=64
    )
    demo = DeMoConfig(lr=3e-3)
    fp32 = dataclasses.replace(demo, value_mode=ValueMode.FP32)
    devices = [DEV, "cpu", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        data = LocalTokenProvider(make_corpus(tmp, 200_000), seq_len=64, shuffle_seed=0)
        clients = [Trainer(build_model(cfg, seed=0).to(d), demo, data) for d in devices]
        for step in range(steps):
            idx = [[(step * 3 + c) * 4 + i for i in range(4)] for c in range(3)]
            mom = [{n: m.clone() for n, m in c.demo.momentum.items()} for c in clients]
            grads = [
                compute_gradients(c.model, data.get_batch(i))[0]
                for c, i in zip(clients, idx, strict=True)
            ]
            outs = [c.train_step(i) for c, i in zip(clients, idx, strict=True)]
            results = [decode_result(o.result.to_bytes()) for o in outs]
            row: dict[str, object] = {"step": step, "loss": [round(o.loss, 4) for o in outs]}
            # Cross-hardware verification: recompute client 0 (GPU) on CPU and client 1 on GPU.
            cpu_m0 = {n: m.cpu() for n, m in mom[0].items()}
            g0_cpu = compute_gradients(clients[1].model, data.get_batch(idx[0]))[0]
            ref0 = compress_step(cpu_m0, g0_cpu, demo, update_momentum=False)
            row["score_gpu_by_cpu_sign"] = round(score_results(results[0], ref0), 5)
            gpu_m1 = {n: m.to(DEV) for n, m in mom[1].items()}
            g1_gpu = compute_gradients(clients[0].model, data.get_batch(idx[1]))[0]
            ref1 = compress_step(gpu_m1, g1_gpu, demo, update_momentum=False)
            row["score_cpu_by_gpu_sign"] = round(score_results(results[1], ref1), 5)
            claim_fp32 = compress_step(mom[0], grads[0], fp32, update_momentum=False)
            ref_fp32 = compress_step(cpu_m0, g0_cpu, fp32, update_momentum=False)
            row["score_gpu_by_cpu_fp32"] = round(score_results(claim_fp32, ref_fp32), 5)
            for c in clients:
                c.apply(results)
            hashes = [param_hash(c.model) for c in clients]
            row["hashes_equal"] = len(set(hashes)) == 1
            row["hash"] = hashes[0][:16]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
