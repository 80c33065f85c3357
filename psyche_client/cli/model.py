"""`psyche-client model init`: write a fresh model directory for a new run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

model_app = typer.Typer(help="Prepare a model directory for a new run.", no_args_is_help=True)

ARCHS = ("psyche", "llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral")
"""`psyche`: the client's own Llama (training/model.py); the others: transformers' classes."""


def model_init(
    directory: Annotated[Path, typer.Argument(help="Directory to create.")],
    arch: Annotated[
        str,
        typer.Option(
            help="psyche (the client's own Llama) or a transformers architecture: "
            "llama, mistral, qwen2, qwen3, qwen3_moe, mixtral."
        ),
    ] = "psyche",
    layers: int = 2,
    dim: int = 64,
    heads: int = 4,
    kv_heads: Annotated[
        int | None, typer.Option(help="K/V heads (grouped-query attention); default: heads.")
    ] = None,
    ffn: Annotated[
        int | None, typer.Option(help="MLP width (per expert for a MoE); default ~8/3 dim.")
    ] = None,
    tie: Annotated[bool, typer.Option(help="Tie the LM head to the embedding.")] = True,
    experts: Annotated[int, typer.Option(help="Experts per MoE layer.")] = 4,
    experts_per_tok: Annotated[int, typer.Option(help="Experts each token is routed to.")] = 2,
    seq_len: int = 64,
    vocab: int = 256,
    tokenizer: Annotated[
        Path | None, typer.Option(help="A tokenizer directory (or tokenizer.json) to include.")
    ] = None,
    lr: float = 3e-3,
    chunk: int = 16,
    topk: int = 4,
    seed: int = 0,
) -> None:
    """Write a freshly initialised model (HF directory: config.json, weights, psyche.json)."""
    from psyche_client.errors import UserError

    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} exists and is not a directory")
    if arch not in ARCHS:
        raise UserError(f"--arch {arch!r}: use one of {', '.join(ARCHS)}")
    from psyche_client.checkpoint.io import save_checkpoint
    from psyche_client.runspec import TrainingSpec, save_spec
    from psyche_client.training.model import LlamaConfig, ModelConfig, build_model
    from psyche_client.training.optimizer import DeMoConfig

    shape = {
        "vocab_size": vocab,
        "hidden_size": dim,
        "intermediate_size": ffn or (dim * 8 // 3 // 8 * 8 or 8),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads or heads,
        "max_position_embeddings": max(seq_len, 8),
        "tie_word_embeddings": tie,
    }
    cfg: ModelConfig
    try:
        if arch == "psyche":
            cfg = LlamaConfig(**shape)
        else:
            from psyche_client.training.hf import HFConfig, arch_config

            d = arch_config(arch, **shape, num_experts=experts, num_experts_per_tok=experts_per_tok)
            cfg = HFConfig(d)
    except ValueError as e:
        raise UserError(f"invalid model shape: {e}") from None
    model = build_model(cfg, seed=seed)
    save_checkpoint(model, directory, tokenizer=tokenizer)
    save_spec(TrainingSpec(seq_len, DeMoConfig(lr=lr, chunk_size=chunk, topk=topk)), directory)
    print(f"{arch} model with {model.num_parameters():,} parameters written to {directory}")


model_app.command("init")(model_init)
