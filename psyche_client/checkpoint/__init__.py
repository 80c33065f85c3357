"""Checkpoints: HF-style `config.json` + `model.safetensors`, from a directory, URL or the Hub."""

from psyche_client.checkpoint.io import (
    CheckpointError,
    load_checkpoint,
    load_config,
    resolve_source,
    save_checkpoint,
)

__all__ = ["CheckpointError", "load_checkpoint", "load_config", "resolve_source", "save_checkpoint"]
