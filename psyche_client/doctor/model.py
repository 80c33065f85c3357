"""The run's model without loading it: its config.json (and psyche.json) from the model
reference, the parameter count, and what training it takes in memory and on disk.

Only JSON is read (a directory's files, or two small GETs of an http(s) model), so the check
imports no torch and downloads no weights. The memory estimate is the client's own layout:
fp32 weights, fp32 gradients, DeMo's fp32 momentum and its same-sized compression scratch
(`training.optimizer.DeMo`), i.e. 16 bytes a parameter, plus activations for one micro-batch
and the process itself (`BASE_BYTES`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psyche_client import _core
from psyche_client.doctor.report import Check, fail, ok, warn

BYTES_PER_PARAM = 16
"""fp32 weights + gradients + DeMo momentum + DeMo scratch."""
BASE_BYTES = 800 << 20
"""The client process before any model: Python, torch, libp2p and the client modules imported
(peak RSS 812 MiB measured on Linux x86-64, torch 2.15 CPU)."""
DEFAULT_SEQ_LEN = 64
"""`TrainingSpec`'s default, used when the model carries no psyche.json."""
MAX_JSON_BYTES = 1 << 20


@dataclass
class ModelFacts:
    """`config`: the model's config.json (None: not readable before joining)."""

    source: str
    config: dict[str, Any] | None = None
    seq_len: int = DEFAULT_SEQ_LEN
    micro_batch: int | None = None

    @property
    def params(self) -> int | None:
        return None if self.config is None else param_count(self.config)

    @property
    def vocab_size(self) -> int | None:
        v = None if self.config is None else self.config.get("vocab_size")
        return v if isinstance(v, int) and not isinstance(v, bool) else None


def param_count(cfg: dict[str, Any]) -> int:
    """Parameters of the model a config.json describes, without building it: the client's own
    Llama (`LlamaConfig.param_count`, whose defaults apply to missing keys) and the
    transformers architectures `model init --arch` makes (llama, mistral, qwen2, qwen3,
    qwen3_moe, mixtral: an explicit head_dim, attention biases, q/k norms, experts)."""
    h = int(cfg.get("hidden_size", 128))
    heads = int(cfg.get("num_attention_heads", 4))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // max(1, heads))
    vocab = int(cfg.get("vocab_size", 256))
    layers = int(cfg.get("num_hidden_layers", 2))
    inter = int(cfg.get("intermediate_size", 344))
    kind = str(cfg.get("model_type", "llama"))
    q, kv = heads * head_dim, kv_heads * head_dim
    attn = 2 * h * q + 2 * h * kv
    if kind == "qwen2":  # q/k/v biases, always
        attn += q + 2 * kv
    elif cfg.get("attention_bias"):  # llama-style: all four projections
        attn += q + 2 * kv + h
    if kind in ("qwen3", "qwen3_moe"):  # RMSNorm on q and k, per head
        attn += 2 * head_dim
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
    if experts:
        expert_inter = int(cfg.get("moe_intermediate_size") or inter)
        mlp = experts * 3 * h * expert_inter + h * experts  # experts + router
    else:
        mlp = 3 * h * inter
    layer = attn + mlp + 2 * h
    head = 0 if cfg.get("tie_word_embeddings", True) else vocab * h
    return vocab * h + layers * layer + h + head


def training_bytes(facts: ModelFacts, batch: int) -> int:
    """Weights, gradients, DeMo state, and a rough activation term for `batch` samples."""
    assert facts.config is not None
    cfg = facts.config
    params = param_count(cfg)
    tokens = max(1, batch) * facts.seq_len
    h = int(cfg.get("hidden_size", 128))
    layers = int(cfg.get("num_hidden_layers", 2))
    inter = int(cfg.get("intermediate_size", 344))
    heads = int(cfg.get("num_attention_heads", 4))
    vocab = int(cfg.get("vocab_size", 256))
    per_token = layers * (8 * h + 3 * inter + heads * facts.seq_len) + 3 * vocab
    return BASE_BYTES + params * BYTES_PER_PARAM + tokens * per_token * 4


def checkpoint_bytes(facts: ModelFacts) -> int | None:
    """One fp32 checkpoint (model.safetensors), the most a client writes at a time."""
    params = facts.params
    return None if params is None else params * 4


def _read_json(text: str, where: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{where} is not a JSON object")
    return data


def _fetch_json(url: str, timeout_s: float) -> dict[str, Any] | None:
    import httpx

    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        with client.stream("GET", url) as resp:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                raise ValueError(f"{url}: HTTP {resp.status_code}")
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_JSON_BYTES:
                    raise ValueError(f"{url}: larger than {MAX_JSON_BYTES:,} bytes")
    return _read_json(body.decode(), url)


def model_facts(ref: _core.ModelRef, timeout_s: float) -> tuple[ModelFacts, Check]:
    """The model reference's config (and spec), with a check saying what could be read."""
    kind, location = ref.kind.name, ref.location
    facts = ModelFacts(source=f"{kind} {location}".strip())
    try:
        spec: dict[str, Any] | None = None
        if kind == "LocalPath":
            cfg_path = Path(location) / "config.json"
            if not cfg_path.is_file():
                return facts, fail(
                    "model",
                    f"the run's model directory {location} has no config.json here",
                    "a LocalPath model must exist at that path on every client (copy it)",
                )
            facts.config = _read_json(cfg_path.read_text()[:MAX_JSON_BYTES], str(cfg_path))
            spec_path = Path(location) / "psyche.json"
            if spec_path.is_file():
                spec = _read_json(spec_path.read_text()[:MAX_JSON_BYTES], str(spec_path))
        elif kind == "HttpUrl":
            base = location.rstrip("/")
            facts.config = _fetch_json(f"{base}/config.json", timeout_s)
            if facts.config is None:
                return facts, fail("model", f"{base}/config.json: HTTP 404", "check the URL")
        elif kind == "HuggingFace":
            facts.config = _hub_config(location, ref.revision, timeout_s)
        else:  # Peers: the config arrives with the weights, from the run's members
            return facts, warn(
                "model",
                "the run's model comes from its peers: its size is known only once joined",
                "make sure the memory below fits the run's model size (ask its operator)",
            )
    except Exception as e:  # noqa: BLE001 - network, JSON and hub errors alike: say which
        return facts, warn("model", f"cannot read the model's config ({e})", "check the model")
    if spec is not None:
        seq = spec.get("seq_len")
        if isinstance(seq, int) and seq > 0:
            facts.seq_len = seq
        mb = spec.get("micro_batch")
        facts.micro_batch = mb if isinstance(mb, int) and mb > 0 else None
    params = facts.params or 0
    return facts, ok(
        "model",
        f"{facts.source}: {params / 1e6:.1f} M parameters, vocab {facts.vocab_size}, "
        f"sequence length {facts.seq_len}",
    )


def _hub_config(repo: str, revision: str, timeout_s: float) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo, "config.json", revision=revision or None, etag_timeout=timeout_s)
    return _read_json(Path(path).read_text()[:MAX_JSON_BYTES], f"{repo}/config.json")
