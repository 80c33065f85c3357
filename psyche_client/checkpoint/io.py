"""Save and load model checkpoints as Hugging Face model directories.

A checkpoint is what `transformers.AutoModelForCausalLM.from_pretrained(dir)` reads:
`config.json`, the weights as one `model.safetensors` or as shards
`model-0000i-of-0000n.safetensors` with a `model.safetensors.index.json` naming the shard of
each tensor, `generation_config.json`, and the run's tokenizer files when it has them. The
client's own Llama (training.model) and every transformers architecture (training.hf) save and
load through here; which one a directory holds is in its config.json
(`training.model.config_from_dict`).

safetensors is used because it is a flat, bounds-checked format that cannot execute code on load
(unlike pickle), which matters when a checkpoint comes from a peer or a URL. A source may be:

* a local directory holding the files;
* an ``http://`` / ``https://`` base URL under which they are served;
* a Hugging Face Hub repo id (``org/name``) with an optional revision; this path downloads with
  ``huggingface_hub.snapshot_download`` when that package is installed. It is not exercised by the
  tests (there is no Hub access in CI) but is the same code path as a local directory afterwards.

Every failure (missing file, truncated or corrupt weights, wrong shapes, a config out of bounds)
raises `CheckpointError` with the path and the reason, so an operator can tell "bad download"
from "wrong model". The config is parsed and bounded before anything of its size is allocated or
downloaded, and the weights' total size must fit what the config implies.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from psyche_client.errors import UserError
from psyche_client.progress import progress
from psyche_client.training.hashing import param_hash
from psyche_client.training.model import (
    CausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    ModelConfig,
    config_from_dict,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
GENERATION_NAME = "generation_config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
"""The tokenizer files a HF model directory may hold (copied along, never parsed here)."""
DEFAULT_SHARD_BYTES = 5 << 30
"""Shard size of saved weights (HF's long-time default of 5 GB: big enough for one file per
tiny model, small enough for resumable downloads of big ones)."""
_SHARD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.safetensors$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

MAX_CONFIG_BYTES = 1 << 20
"""A config.json (or generation_config.json) larger than this is not a model config."""
MAX_INDEX_BYTES = 16 << 20
"""A shard index names every tensor once: a few MiB even for thousands of expert tensors."""
MAX_TOKENIZER_BYTES = 64 << 20
"""All tokenizer files together (a large vocabulary's tokenizer.json is ~10 MiB)."""
WEIGHTS_SLACK_BYTES = 16 << 20
"""Room for the safetensors headers (names, shapes) on top of the raw parameter bytes."""
PROGRESS_MIN_BYTES = 64 << 20
"""Saves and downloads smaller than this take well under a second: no progress report."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint could not be found, downloaded or understood."""


# -- saving ---------------------------------------------------------------------------------


def _write_shards(
    state: Mapping[str, torch.Tensor], out: Path, max_shard_bytes: int, done: Callable[[int], None]
) -> list[str]:
    """The state dict as one model.safetensors, or as shards plus an index (HF's layout) when
    it is larger than `max_shard_bytes`; tensors stay in model order."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    if len(shards) == 1:
        save_file(shards[0], str(out / WEIGHTS_NAME), metadata={"format": "pt"})
        done(size)
        return [WEIGHTS_NAME]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for fname, shard in zip(names, shards, strict=True):
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
        done(sum(t.numel() * t.element_size() for t in shard.values()))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return [*names, INDEX_NAME]


def _tokenizer_files(source: str | os.PathLike[str] | None, model: CausalLM) -> dict[str, bytes]:
    if source is None:
        return dict(getattr(model, "extra_files", {}) or {})
    p = Path(source)
    if p.is_file():
        return {p.name: p.read_bytes()} if p.name in TOKENIZER_FILES else {}
    if not p.is_dir():
        raise CheckpointError(f"{p}: no tokenizer file or directory there")
    return {n: (p / n).read_bytes() for n in TOKENIZER_FILES if (p / n).is_file()}


def save_checkpoint(
    model: CausalLM,
    directory: str | os.PathLike[str],
    *,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    tokenizer: str | os.PathLike[str] | None = None,
) -> Path:
    """Writes `model` into `directory` (created if needed) as a HF model directory.

    Weights are sharded above `max_shard_bytes`; a tied LM head is stored once, under the
    embedding's name, as HF does; transformers models are written in transformers' published
    layout (e.g. one tensor per MoE expert). Tokenizer files come from `tokenizer` (a directory
    or a tokenizer.json), else from the ones the model was loaded with (`extra_files`).
    Everything is first written to a scratch directory inside `directory` and then renamed
    into place file by file, config.json last, and weight files of an earlier save that this
    one does not use are removed: a crash leaves whole files, never a half-written one.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    extra = _tokenizer_files(tokenizer, model)
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=out))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    big = size >= PROGRESS_MIN_BYTES
    with contextlib.ExitStack() as stack:
        shown = stack.enter_context(progress(f"saving checkpoint {out}", size)) if big else None
        done: Callable[[int], None] = shown.advance if shown is not None else (lambda n: None)
        stack.callback(shutil.rmtree, staging, ignore_errors=True)
        if isinstance(model, LlamaForCausalLM):
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            if model.config.tie_word_embeddings:
                state.pop("lm_head.weight", None)
            weights = _write_shards(state, staging, max_shard_bytes, done)
        else:
            from psyche_client.training.hf import save_hf_weights

            weights = save_hf_weights(model, staging, max_shard_bytes)  # type: ignore[arg-type]
            done(size)
        config = model.config.to_hf_dict()
        dtype = next(model.parameters()).dtype
        config["torch_dtype"] = str(dtype).removeprefix("torch.")  # (file only, not canonical)
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (staging / GENERATION_NAME).write_text(json.dumps(_generation(config), indent=2) + "\n")
        for name, data in extra.items():
            (staging / name).write_bytes(data)
        for name in [*weights, GENERATION_NAME, *extra]:
            os.replace(staging / name, out / name)
        keep = set(weights)
        for old in out.iterdir():
            if old.name not in keep and (
                old.name == INDEX_NAME or old.name.endswith(".safetensors")
            ):
                old.unlink()
        os.replace(staging / CONFIG_NAME, out / CONFIG_NAME)
    return out


def _generation(config: Mapping[str, Any]) -> dict[str, Any]:
    """generation_config.json: the special token ids the model config names."""
    out: dict[str, Any] = {"_from_model_config": True}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if config.get(key) is not None:
            out[key] = config[key]
    return out


# -- reading a local directory ---------------------------------------------------------------


def _read_json(path: Path, limit: int, what: str) -> Any:
    try:
        if path.stat().st_size > limit:
            raise CheckpointError(f"{path}: larger than {limit:,} bytes")
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no {path.name} in checkpoint directory") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: unreadable {what} ({e})") from e


def parse_config(raw: Any, where: str) -> ModelConfig:
    """A model config from untrusted JSON, as a one-line CheckpointError when invalid."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: config must be a JSON object")
    try:
        return config_from_dict(raw)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{where}: invalid model config ({e})") from e


def load_config(directory: str | os.PathLike[str]) -> ModelConfig:
    """Parses config.json in a local directory (either implementation; bounded, checked)."""
    path = Path(directory) / CONFIG_NAME
    return parse_config(_read_json(path, MAX_CONFIG_BYTES, "config"), str(path))


def weights_limit(cfg: ModelConfig) -> int:
    """The most bytes the weights for `cfg` may take: fp32 parameters (and a separate copy
    of a tied head, which HF files may carry) plus the headers."""
    params = cfg.param_count() + (
        cfg.vocab_size * cfg.hidden_size if cfg.tie_word_embeddings else 0
    )
    return 4 * params + WEIGHTS_SLACK_BYTES


def shard_names(index: Any, where: str) -> list[str]:
    """The shard files an index names (plain file names only: an index from a URL must not
    point outside its directory), in first-use order."""
    try:
        weight_map = index["weight_map"]
        names = list(dict.fromkeys(weight_map.values()))
    except (TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{where}: not a safetensors index ({e!r})") from None
    bad = [n for n in names if not isinstance(n, str) or not _SHARD.match(n)]
    if bad or not names:
        raise CheckpointError(f"{where}: bad shard names {bad[:3]}")
    return names


def weight_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards its index names (which must all be there)."""
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if index.is_file():
        names = shard_names(_read_json(index, MAX_INDEX_BYTES, "index"), str(index))
        files = [directory / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{directory}: weights file missing ({missing[:3]})")
        return files
    if not single.is_file():
        raise CheckpointError(f"{single}: weights file missing")
    return [single]


def _headers(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, from the safetensors headers (nothing of the data is read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if k in shapes:
                        raise CheckpointError(f"{f}: tensor {k} is in two shards")
                    shapes[k] = tuple(st.get_slice(k).get_shape())
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{f}: corrupt or truncated safetensors file ({e})") from e
    return shapes


def _load_native(files: list[Path], cfg: LlamaConfig, where: Path) -> LlamaForCausalLM:
    """The own Llama, strictly: every parameter present with its shape, nothing extra (a
    silently half-loaded model would train but diverge from its peers)."""
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{f}: corrupt or truncated safetensors file ({e})") from e
    model = LlamaForCausalLM(cfg)
    expected = model.state_dict()
    if cfg.tie_word_embeddings:
        expected = {k: v for k, v in expected.items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected) - {"lm_head.weight"})
    if missing or extra:
        raise CheckpointError(
            f"{where}: weights do not match config (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{where}: {name} has shape {tuple(tensors[name].shape)}, "
                f"config implies {tuple(ref.shape)}"
            )
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # the head is the embedding; HF files may carry both
    # strict=False only because a tied head is absent from the file; coverage was checked above.
    model.load_state_dict(tensors, strict=not cfg.tie_word_embeddings)
    return model


def _read_tokenizer(directory: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    total = 0
    for name in TOKENIZER_FILES:
        p = directory / name
        if p.is_file():
            total += p.stat().st_size
            if total > MAX_TOKENIZER_BYTES:
                raise CheckpointError(f"{directory}: tokenizer files over {MAX_TOKENIZER_BYTES:,}")
            out[name] = p.read_bytes()
    return out


# -- remote sources --------------------------------------------------------------------------


def _fetch(
    client: httpx.Client,
    url: str,
    path: Path,
    limit: int,
    optional: bool = False,
) -> int:
    """Stream `url` into `path`, refusing more than `limit` bytes (a hostile server could
    otherwise fill the disk); the file is complete only once renamed into place. Returns the
    bytes written (0 for an `optional` file the server does not have)."""
    tmp = path.with_name(path.name + ".part")
    try:
        with client.stream("GET", url) as resp:
            if optional and resp.status_code == 404:
                return 0
            if resp.status_code != 200:
                raise CheckpointError(f"{url}: HTTP {resp.status_code}")
            declared = resp.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise CheckpointError(
                    f"{url}: {int(declared):,} bytes, more than the {limit:,} allowed"
                )
            total = int(declared) if declared is not None and declared.isdigit() else None
            big = total is not None and total >= PROGRESS_MIN_BYTES
            got = 0
            with (
                open(tmp, "wb") as f,
                progress(f"downloading {url}", total) if big else contextlib.nullcontext() as shown,
            ):
                for chunk in resp.iter_bytes():
                    got += len(chunk)
                    if got > limit:
                        raise CheckpointError(f"{url}: more than the {limit:,} bytes allowed")
                    f.write(chunk)
                    if shown is not None:
                        shown.advance(len(chunk))
        os.replace(tmp, path)
        return got
    except httpx.HTTPError as e:
        raise CheckpointError(f"{url}: download failed ({e})") from e
    finally:
        tmp.unlink(missing_ok=True)


def _download_http(base_url: str, dest: Path, timeout_s: float) -> None:
    """config.json first (small), then the index if there is one, then the weights, bounded
    all together by what that config implies; then the optional small files."""
    base = base_url.rstrip("/")
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        _fetch(client, f"{base}/{CONFIG_NAME}", dest / CONFIG_NAME, MAX_CONFIG_BYTES)
        budget = weights_limit(load_config(dest))
        if _fetch(client, f"{base}/{INDEX_NAME}", dest / INDEX_NAME, MAX_INDEX_BYTES, True):
            names = shard_names(_read_json(dest / INDEX_NAME, MAX_INDEX_BYTES, "index"), base)
        else:
            names = [WEIGHTS_NAME]
        for name in names:
            if budget <= 0:
                raise CheckpointError(f"{base}: weights more than the config allows")
            budget -= _fetch(client, f"{base}/{name}", dest / name, budget)
        _fetch(client, f"{base}/{GENERATION_NAME}", dest / GENERATION_NAME, MAX_CONFIG_BYTES, True)
        left = MAX_TOKENIZER_BYTES
        for name in TOKENIZER_FILES:
            left -= _fetch(client, f"{base}/{name}", dest / name, left, True)


def _download_hub(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise CheckpointError(
            f"{repo_id}: loading from the Hugging Face Hub needs the huggingface_hub package"
        ) from e
    try:
        path = snapshot_download(
            repo_id=repo_id,
            revision=revision,
            allow_patterns=[CONFIG_NAME, INDEX_NAME, GENERATION_NAME, "*.safetensors"]
            + list(TOKENIZER_FILES),
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
) -> CausalLM:
    """Builds the model config.json describes and loads its weights, strictly.

    Strict means every model parameter must be present with the right shape and nothing extra
    may be in the files. The config's implied size is checked against the files (headers
    only) before the model is built, and a `content_hash` (the run's checkpoint hash,
    `param_hash` hex) must match what was loaded. Tokenizer files in the directory ride along
    on the model (`extra_files`) into the checkpoints it is saved to.
    """
    directory = resolve_source(source, revision=revision, cache_dir=cache_dir)
    cfg = load_config(directory)
    files = weight_files(directory)
    where = files[0] if len(files) == 1 else directory
    size = sum(f.stat().st_size for f in files)
    if size > weights_limit(cfg):
        raise CheckpointError(
            f"{where}: larger than its config allows ({weights_limit(cfg):,} bytes)"
        )
    shapes = _headers(files)
    tied = cfg.tie_word_embeddings
    # (Old Llama files may carry the rotary table, which transformers recomputes and skips.)
    held = sum(
        math.prod(s)
        for k, s in shapes.items()
        if not (tied and k == "lm_head.weight") and not k.endswith("rotary_emb.inv_freq")
    )
    if held != cfg.param_count():
        raise CheckpointError(
            f"{where}: holds {held:,} parameters, its config implies {cfg.param_count():,}"
        )
    model: CausalLM
    if isinstance(cfg, LlamaConfig):
        model = _load_native(files, cfg, where)
    else:
        from psyche_client.training.hf import LoadError, load_hf_pretrained

        try:
            model = load_hf_pretrained(directory, cfg)
        except LoadError as e:
            raise CheckpointError(f"{where}: {e}") from None
    model.extra_files = _read_tokenizer(directory)
    if content_hash is not None and param_hash(model) != content_hash:
        raise CheckpointError(
            f"{source}: the weights' hash {param_hash(model)[:16]}… is not the run's checkpoint "
            f"hash {content_hash[:16]}… (tampered, stale or wrong checkpoint)"
        )
    return model.to(dtype)
