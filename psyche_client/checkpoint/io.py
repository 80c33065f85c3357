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
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from psyche_client.errors import UserError
from psyche_client.training.hashing import param_hash
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
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes")
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no {CONFIG_NAME} in checkpoint directory") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: unreadable config ({e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: config must be a JSON object")
    try:
        return LlamaConfig.from_hf_dict(raw)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e})") from e


MAX_CONFIG_BYTES = 1 << 20
"""A config.json larger than this is not a model config."""
WEIGHTS_SLACK_BYTES = 16 << 20
"""Room for the safetensors header (names, shapes) on top of the raw parameter bytes."""


def weights_limit(cfg: LlamaConfig) -> int:
    """The most bytes a weights file for `cfg` may take: fp32 parameters (and a separate copy
    of a tied head, which HF files may carry) plus the header."""
    params = cfg.param_count() + (
        cfg.vocab_size * cfg.hidden_size if cfg.tie_word_embeddings else 0
    )
    return 4 * params + WEIGHTS_SLACK_BYTES


def _fetch(client: httpx.Client, url: str, path: Path, limit: int) -> None:
    """Stream `url` into `path`, refusing more than `limit` bytes (a hostile server could
    otherwise fill the disk); the file is complete only once renamed into place."""
    tmp = path.with_name(path.name + ".part")
    try:
        with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise CheckpointError(f"{url}: HTTP {resp.status_code}")
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise CheckpointError(
                    f"{url}: {int(declared):,} bytes, more than the {limit:,} allowed"
                )
            got = 0
            with open(tmp, "wb") as f:
                for chunk in resp.iter_bytes():
                    got += len(chunk)
                    if got > limit:
                        raise CheckpointError(f"{url}: more than the {limit:,} bytes allowed")
                    f.write(chunk)
        os.replace(tmp, path)
    except httpx.HTTPError as e:
        raise CheckpointError(f"{url}: download failed ({e})") from e
    finally:
        tmp.unlink(missing_ok=True)


def _download_http(base_url: str, dest: Path, timeout_s: float) -> None:
    """config.json first (small), then the weights, bounded by what that config implies."""
    base = base_url.rstrip("/")
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        _fetch(client, f"{base}/{CONFIG_NAME}", dest / CONFIG_NAME, MAX_CONFIG_BYTES)
        cfg = load_config(dest)
        _fetch(client, f"{base}/{WEIGHTS_NAME}", dest / WEIGHTS_NAME, weights_limit(cfg))


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
        try:
            _download_http(s, dest, timeout_s)
        except BaseException:
            if not cache_dir:  # ours: leave nothing behind
                shutil.rmtree(dest, ignore_errors=True)
            raise
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
    content_hash: str | None = None,
) -> LlamaForCausalLM:
    """Builds the model described by config.json and loads the weights, strictly.

    Strict means every model parameter must be present with the right shape and nothing extra may
    be in the file: a silently half-loaded model would train but diverge from its peers. The
    config's implied size is checked against the file before the model is built, and a
    `content_hash` (the run's checkpoint hash, `param_hash` hex) must match what was loaded.
    """
    directory = resolve_source(source, revision=revision, cache_dir=cache_dir)
    cfg = load_config(directory)
    wpath = directory / WEIGHTS_NAME
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: weights file missing")
    if wpath.stat().st_size > weights_limit(cfg):
        raise CheckpointError(
            f"{wpath}: larger than its config allows ({weights_limit(cfg):,} bytes)"
        )
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath}: corrupt or truncated safetensors file ({e})") from e
    held = sum(
        t.numel()
        for k, t in tensors.items()
        if not (cfg.tie_word_embeddings and k == "lm_head.weight")
    )
    if held != cfg.param_count():
        raise CheckpointError(
            f"{wpath}: holds {held:,} parameters, its config implies {cfg.param_count():,}"
        )
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
    if content_hash is not None and param_hash(model) != content_hash:
        raise CheckpointError(
            f"{source}: the weights' hash {param_hash(model)[:16]}… is not the run's checkpoint "
            f"hash {content_hash[:16]}… (tampered, stale or wrong checkpoint)"
        )
    return model.to(dtype)
