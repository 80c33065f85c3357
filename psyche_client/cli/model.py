"""`psyche-client model init`: write a fresh model directory for a new run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

model_app = typer.Typer(help="Prepare a model directory for a new run.", no_args_is_help=True)


def model_init(
    directory: Annotated[Path, typer.Argument(help="Directory to create.")],
    layers: int = 2,
    dim: int = 64,
    heads: int = 4,
    seq_len: int = 64,
    vocab: int = 256,
    lr: float = 3e-3,
    chunk: int = 16,
    topk: int = 4,
    seed: int = 0,
) -> None:
    """Write a freshly initialised model (config.json, model.safetensors, psyche.json)."""
    from psyche_client.errors import UserError

    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} exists and is not a directory")
    from psyche_client.checkpoint.io import save_checkpoint
    from psyche_client.runspec import TrainingSpec, save_spec
    from psyche_client.training.model import LlamaConfig, build_model
    from psyche_client.training.optimizer import DeMoConfig

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=dim,
        intermediate_size=dim * 8 // 3 // 8 * 8 or 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max(seq_len, 8),
    )
    model = build_model(cfg, seed=seed)
    save_checkpoint(model, directory)
    save_spec(TrainingSpec(seq_len, DeMoConfig(lr=lr, chunk_size=chunk, topk=topk)), directory)
    print(f"model with {model.num_parameters():,} parameters written to {directory}")


model_app.command("init")(model_init)
