"""Save and load model checkpoints as `config.json` + `model.safetensors`.

safetensors is used because it is a flat, bounds-checked format that cannot execute code on load
(unlike pickle), which matters when a checkpoint comes from a peer or a URL. A source may be:

* a local directory holding both files;
* an ``http://`` / ``https://`` base URL under which both files are served;
* a Hugging Face Hub repo id (``org/name``) with an optional revision; this path downloads with
  ``huggingface_hub.snapshot_download`` when that package is installed. It is not exercised by the
  tests (there is no Hub access in CI) but is the same code path as a local directory afterwards.

Every failure (missing file, truncated or corrupt weights, wrong shapes) raises `CheckpointError`
with the path and the reason, so an operator can tell "bad download" from "wrong model".
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from psyche_client.errors import UserError
from psyche_client.training.model import LlamaConfig, LlamaForCausalLM

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint could not be found, downloaded or understood."""


def save_checkpoint(model: LlamaForCausalLM, directory: str | os.PathLike[str]) -> Path:
    """Writes config.json and model.safetensors into `directory` (created if needed).

    A tied LM head is stored once, under the embedding's name, as HF does; files are written to a
    temporary name and renamed so a crash never leaves a half-written checkpoint behind.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    tmp_w = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp_w), metadata={"format": "pt"})
    os.replace(tmp_w, out / WEIGHTS_NAME)
    tmp_c = out / (CONFIG_NAME + ".tmp")
    tmp_c.write_text(json.dumps(model.config.to_hf_dict(), indent=2, sort_keys=True))
    os.replace(tmp_c, out / CONFIG_NAME)
    return out


def load_config(directory: str | os.PathLike[str]) -> LlamaConfig:
    """Parses config.json in a local directory into a LlamaConfig."""
    path = Path(directory) / CONFIG_NAME
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no {CONFIG_NAME} in checkpoint directory") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable config ({e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: config must be a JSON object")
    try:
        return LlamaConfig.from_hf_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e})") from e


def _download_http(base_url: str, dest: Path, timeout_s: float) -> None:
    base = base_url.rstrip("/")
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            url = f"{base}/{name}"
            try:
                with client.stream("GET", url) as resp:
                    if resp.status_code != 200:
                        raise CheckpointError(f"{url}: HTTP {resp.status_code}")
                    with open(dest / name, "wb") as f:
                        for chunk in resp.iter_bytes():
                            f.write(chunk)
            except httpx.HTTPError as e:
                raise CheckpointError(f"{url}: download failed ({e})") from e


def _download_hub(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise CheckpointError(
            f"{repo_id}: loading from the Hugging Face Hub needs the huggingface_hub package"
        ) from e
    try:
        path = snapshot_download(
            repo_id=repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]
        )
    except Exception as e:  # the hub client raises many unrelated types
        raise CheckpointError(f"{repo_id}@{revision or 'main'}: hub download failed ({e})") from e
    return Path(path)


def resolve_source(
    source: str | os.PathLike[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Turns a directory, URL or hub id into a local directory holding the checkpoint files."""
    s = os.fspath(source)
    if s.startswith(("http://", "https://")):
        dest = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="psyche-ckpt-"))
        dest.mkdir(parents=True, exist_ok=True)
        _download_http(s, dest, timeout_s)
        return dest
    p = Path(s)
    if p.is_dir():
        return p
    if not p.exists() and _HUB_ID.match(s):
        return _download_hub(s, revision)
    raise CheckpointError(f"{s}: not a checkpoint directory, http(s) URL or hub repo id")


def load_checkpoint(
    source: str | os.PathLike[str],
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LlamaForCausalLM:
    """Builds the model described by config.json and loads the weights, strictly.

    Strict means every model parameter must be present with the right shape and nothing extra may
    be in the file: a silently half-loaded model would train but diverge from its peers.
    """
    directory = resolve_source(source, revision=revision, cache_dir=cache_dir)
    cfg = load_config(directory)
    wpath = directory / WEIGHTS_NAME
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: weights file missing")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath}: corrupt or truncated safetensors file ({e})") from e
    model = LlamaForCausalLM(cfg)
    expected = model.state_dict()
    if cfg.tie_word_embeddings:
        expected = {k: v for k, v in expected.items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected) - {"lm_head.weight"})
    if missing or extra:
        raise CheckpointError(
            f"{wpath}: weights do not match config (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{wpath}: {name} has shape {tuple(tensors[name].shape)}, "
                f"config implies {tuple(ref.shape)}"
            )
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # the head is the embedding; HF files may carry both
    # strict=False only because a tied head is absent from the file; coverage was checked above.
    model.load_state_dict(tensors, strict=not cfg.tie_word_embeddings)
    return model.to(dtype)
