"""The client train step: results, accounting, micro-batching, multi-client training, and
data parallelism inside one client (two gloo processes)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import torch

from psyche_client.data.local import LocalTokenProvider
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import DeMoConfig
from psyche_client.training.recompute import score_results
from psyche_client.training.result import decode_result
from psyche_client.training.trainer import Trainer, compute_gradients


def test_train_step_produces_a_result_and_leaves_params_until_apply(
    tiny_config: LlamaConfig, corpus_files: list[Path]
) -> None:
    trainer = Trainer(build_model(tiny_config), DeMoConfig(), LocalTokenProvider(corpus_files, 32))
    before = param_hash(trainer.model)
    out = trainer.train_step([0, 1, 2, 3])
    assert out.tokens == 4 * 32 and out.tokens_per_s > 0 and out.loss > 0
    assert set(out.result.params) == {n for n, _ in trainer.model.named_parameters()}
    assert param_hash(trainer.model) == before  # compress never touches parameters
    assert any(m.abs().sum() > 0 for m in trainer.demo.momentum.values())
    trainer.apply([out.result])
    assert param_hash(trainer.model) != before


def test_micro_batches_give_the_same_gradient(
    tiny_config: LlamaConfig, corpus_files: list[Path]
) -> None:
    model = build_model(tiny_config)
    batch = LocalTokenProvider(corpus_files, 32).get_batch(range(6))
    whole, loss_a = compute_gradients(model, batch)
    parts, loss_b = compute_gradients(model, batch, micro_batch=2)
    assert abs(loss_a - loss_b) < 1e-5
    assert all(torch.allclose(whole[n], parts[n], atol=1e-6, rtol=1e-4) for n in whole)


def test_two_clients_training_on_the_corpus_reduce_held_out_loss(
    tiny_config: LlamaConfig, corpus_files: list[Path]
) -> None:
    data = LocalTokenProvider(corpus_files, 32, shuffle_seed=0)
    cfg = DeMoConfig(lr=1e-2, chunk_size=16, topk=4)
    a = Trainer(build_model(tiny_config), cfg, data)
    b = Trainer(build_model(tiny_config), cfg, data)
    held_out = list(range(len(data) - 16, len(data)))
    start = a.evaluate(held_out)
    for step in range(25):
        ra = a.train_step([step * 8 + i for i in range(4)]).result
        rb = b.train_step([step * 8 + 4 + i for i in range(4)]).result
        a.apply([ra, rb])
        b.apply([ra, rb])
    assert param_hash(a.model) == param_hash(b.model)
    assert a.evaluate(held_out) < start - 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_processes_act_as_one_client(
    tmp_path: Path, tiny_config: LlamaConfig, corpus_files: list[Path]
) -> None:
    worker = Path(__file__).with_name("dp_worker.py")
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(r), "2", str(port), str(tmp_path)]
            + [str(f) for f in corpus_files],
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    r0 = (tmp_path / "result0.bin").read_bytes()
    assert r0 == (tmp_path / "result1.bin").read_bytes()  # both ranks send the same result
    assert (tmp_path / "hash0.txt").read_text() == (tmp_path / "hash1.txt").read_text()
    assert (tmp_path / "tokens0.txt").read_text() == str(4 * 32)  # each rank did half
    # The same step in one process, on the whole batch, picks the same coefficients (up to
    # rounding from the different summation order).
    single = Trainer(
        build_model(tiny_config, seed=0), DeMoConfig(lr=1e-2), LocalTokenProvider(corpus_files, 32)
    )
    ref = single.train_step(list(range(8))).result
    assert score_results(decode_result(r0), ref) > 0.99


def test_bf16_model_trains_and_two_clients_stay_identical(
    tiny_config: LlamaConfig, corpus_files: list[Path]
) -> None:
    data = LocalTokenProvider(corpus_files, 32)
    cfg = DeMoConfig(lr=1e-2)
    a = Trainer(build_model(tiny_config, dtype=torch.bfloat16), cfg, data)
    b = Trainer(build_model(tiny_config, dtype=torch.bfloat16), cfg, data)
    assert all(m.dtype == torch.float32 for m in a.demo.momentum.values())
    start = a.evaluate(list(range(100, 108)))
    for step in range(8):
        ra = a.train_step([step * 4 + i for i in range(2)]).result
        rb = b.train_step([step * 4 + 2 + i for i in range(2)]).result
        a.apply([ra, rb])
        b.apply([ra, rb])
    assert next(a.model.parameters()).dtype == torch.bfloat16
    assert param_hash(a.model) == param_hash(b.model)
    assert a.evaluate(list(range(100, 108))) < start
