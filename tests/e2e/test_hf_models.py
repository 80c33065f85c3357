"""End to end with transformers architectures: real server and client processes train a tiny
Llama-3-style model (transformers' LlamaForCausalLM, 128256-token vocabulary, GQA, u32 tokens
from a `data prepare` directory) and a tiny Qwen3-MoE (3-D expert weights, a late joiner that
gets the model from its peers), and every client applies bit-identical parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from psyche_client import _core
from psyche_client.checkpoint.io import load_checkpoint, save_checkpoint
from psyche_client.cli.demo import read_events
from psyche_client.data.corpus import make_prepared_corpus
from psyche_client.runspec import TrainingSpec, save_spec
from psyche_client.training.hashing import param_hash
from psyche_client.training.hf import HFConfig, arch_config
from psyche_client.training.model import build_model
from psyche_client.training.optimizer import DeMoConfig
from tests.e2e.harness import LocalRun, by_step

pytestmark = pytest.mark.timeout(300)

SEQ = 32
MULTI = "multi"
SHORT = {
    "total_steps": 6,
    "rounds_per_epoch": 3,
    "batch_size_start": 6,
    "batch_size_end": 6,
}


def _inputs(config: dict[str, Any]) -> Any:
    """A `LocalRun.make_inputs`: the prepared u32 corpus and a model directory for `config`
    (with the corpus's tokenizer in it)."""

    def make(work: Path) -> tuple[Path, Path]:
        tok, data = make_prepared_corpus(work / "corpus", seq_len=SEQ)
        assert list(data.glob("*.u32.bin")), "the run reads u32 tokens"
        model_dir = work / "model"
        save_checkpoint(build_model(HFConfig(config), seed=0), model_dir, tokenizer=tok)
        save_spec(TrainingSpec(SEQ, DeMoConfig(lr=3e-3, chunk_size=16, topk=4)), model_dir)
        return data, model_dir

    return make


def _llama3() -> dict[str, Any]:
    d = arch_config(
        "llama",
        vocab_size=128256,  # Llama 3's: ids need u32
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return {**d, "rope_theta": 500000.0, "bos_token_id": 128000, "eos_token_id": 128001}


def _moe() -> dict[str, Any]:
    return arch_config(
        "qwen3_moe",
        vocab_size=512,
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        num_experts=4,
        num_experts_per_tok=2,
    )


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[LocalRun]]:
    made: list[LocalRun] = []
    yield made
    for r in made:
        if MULTI in r.clients and r.clients[MULTI].poll() is None:
            r.kill_group(MULTI)
        r.stop()


def _in_sync(run: LocalRun, names: list[str]) -> dict[int, set[str]]:
    steps = by_step({n: run.applied_hashes(n) for n in names})
    diverged = {s: h for s, h in steps.items() if len(h) != 1}
    assert not diverged, f"clients diverged at steps {sorted(diverged)}"
    return steps


def test_three_clients_train_a_llama3_style_transformers_model(
    tmp_path: Path, runs: list[LocalRun]
) -> None:
    """Two 1-rank clients and one of two ranks (torchrun, gloo, FSDP2): every rank of every
    client applies identical parameters."""
    run = LocalRun(tmp_path / "run", make_inputs=_inputs(_llama3()))
    runs.append(run)
    run.config.update(SHORT)
    names = ["client0", "client1", MULTI]
    run.start_server()
    for n in names[:2]:
        run.start_client(n)
    run.start_torchrun_client(MULTI, 2, ["--parallel=fsdp"])
    run.wait_clients(names, timeout=240)
    total = run.config["total_steps"]
    steps = _in_sync(run, names)
    assert sorted(steps) == list(range(total)), "every step was applied by every client"
    events = run.events(MULTI)
    assert [(e["world"], e["layout"]) for e in events if e["event"] == "ranks"] == [(2, "fsdp")]
    assert any(e["event"] == "trained" for e in events), "the 2-rank client trained"
    rank0 = [e["hash"] for e in events if e["event"] == "applied"]
    rank1 = [
        e["hash"]
        for e in read_events(run.work / f"{MULTI}.events.jsonl.rank1")
        if e["event"] == "applied"
    ]
    assert len(rank0) == total and rank1 == rank0, "rank 1 holds rank 0's parameters"
    final = run.work / "client0" / "final"
    for n in names:
        finished = [e["hash"] for e in run.events(n) if e["event"] == "finished"]
        assert finished == [run.applied_hashes(n)[total - 1]]
    assert run.state().phase == _core.Phase.Finished
    # The final checkpoint is a HF directory transformers loads, tokenizer included.
    from transformers import AutoModelForCausalLM

    ours = load_checkpoint(final)
    assert param_hash(ours) == run.applied_hashes("client0")[total - 1]
    theirs = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    x = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        assert torch.equal(theirs(input_ids=x).logits, ours(x)[0])
    assert (final / "tokenizer.json").is_file()


def test_a_moe_run_with_a_late_joiner_stays_identical(tmp_path: Path, runs: list[LocalRun]) -> None:
    run = LocalRun(tmp_path / "run", make_inputs=_inputs(_moe()))
    runs.append(run)
    run.config.update(SHORT, total_steps=12, min_clients=2)
    run.start_server()
    for n in ["client0", "client1"]:
        run.start_client(n)
    run.wait_until(lambda: len(run.losses("client0")) >= 1, 180, "training to start")
    run.start_client("late")
    names = ["client0", "client1", "late"]
    run.wait_clients(names, timeout=240)
    sources = [e["source"] for e in run.events("late") if e["event"] == "model"]
    assert sources == ["peers"], sources
    late = run.applied_hashes("late")
    assert late, "the late joiner applied steps"
    steps = _in_sync(run, names)
    assert sorted(steps) == list(range(run.config["total_steps"]))
    assert run.losses("late"), "the late joiner trained"
    assert run.state().phase == _core.Phase.Finished
