"""A small Llama-style decoder, written to be read top to bottom.

Architecture (as in Llama 2/3): token embedding → N × [RMSNorm → causal self-attention with rotary
position embeddings (optionally grouped-query) → residual → RMSNorm → SwiGLU MLP → residual] →
RMSNorm → LM head (tied to the embedding or not). No biases anywhere.

Parameter names follow the Hugging Face `LlamaForCausalLM` layout (`model.layers.0.self_attn.q_proj`
…) so that a `config.json` + `model.safetensors` pair written here has the familiar shape, and so
that DeMo results, which are keyed by parameter name, are readable.

The structure follows the spirit of nanoGPT's model.py: one file, plain modules, no framework.
Its logits are bit-identical to transformers' `LlamaForCausalLM` on the same config and weights
(tests/models), and it is faster on the tiny models of the tests and the demo and needs no
transformers import (docs/decisions/0005-hf-models.md). Every other architecture goes through
`training.hf`; `config_from_dict` and `build_model` pick the implementation from the config:
a config.json written from a `LlamaConfig` carries `"psyche_impl": "native"`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from psyche_client.training.hf import HFCausalLM, HFConfig

NATIVE_KEY, NATIVE = "psyche_impl", "native"
"""The config.json key (ignored by transformers) that selects this file's implementation."""
MAX_PARAMS = 1 << 40
"""Largest model a config may describe (a sanity bound, far above anything trainable here)."""
_INT_BOUNDS = {
    "vocab_size": (1, 1 << 22),
    "hidden_size": (2, 1 << 16),
    "intermediate_size": (1, 1 << 18),
    "num_hidden_layers": (1, 1024),
    "num_attention_heads": (1, 1024),
    "num_key_value_heads": (1, 1024),
    "max_position_embeddings": (1, 1 << 20),
}


@dataclass
class LlamaConfig:
    """Model shape. Field names are HF LlamaConfig's, so config.json round-trips."""

    vocab_size: int = 256
    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 256
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        # A config may come from a peer or a URL: check types and sizes before any arithmetic or
        # allocation (vocab 10^12 would try to allocate terabytes, 0 heads divides by zero).
        for name, (lo, hi) in _INT_BOUNDS.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {v!r}")
        for name in ("rms_norm_eps", "rope_theta", "initializer_range"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1e12:
                raise ValueError(f"{name} must be a positive finite number, not {v!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError("tie_word_embeddings must be true or false")
        if self.param_count() > MAX_PARAMS:
            raise ValueError(
                f"the config implies {self.param_count():,} parameters (> {MAX_PARAMS:,})"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError("the head dimension must be even for rotary embeddings")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    def param_count(self) -> int:
        """Parameters the model built from this config has (computed without building it)."""
        h, kv = (
            self.hidden_size,
            self.num_key_value_heads * (self.hidden_size // self.num_attention_heads),
        )
        attn = h * h * 2 + h * kv * 2
        mlp = 3 * h * self.intermediate_size
        layer = attn + mlp + 2 * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.vocab_size * h + self.num_hidden_layers * layer + h + head

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json content: our fields plus the keys HF tools use to recognise a Llama."""
        d: dict[str, Any] = asdict(self)
        d["architectures"] = ["LlamaForCausalLM"]
        d["model_type"] = "llama"
        d["hidden_act"] = "silu"
        d[NATIVE_KEY] = NATIVE
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> LlamaConfig:
        """Reads the fields we know and ignores the rest (HF configs carry many extra keys)."""
        if d.get("model_type", "llama") != "llama":
            raise ValueError(f"model_type {d.get('model_type')!r} is not a Llama")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if kwargs.get("num_key_value_heads") is None and "num_attention_heads" in kwargs:
            kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
        return cls(**kwargs)


class RMSNorm(nn.Module):
    """Root-mean-square norm: scale only, no mean subtraction, no bias (cheaper than LayerNorm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 even for a bf16 model: the mean of squares underflows in bf16.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rotary_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotary embeddings (RoFormer, Su et al. 2021): (seq_len, head_dim)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)  # the "rotate half" layout HF Llama uses
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates pairs (x_i, x_{i+d/2}) by a position-dependent angle; x is (B, H, T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Causal multi-head attention with rotary positions and optional grouped-query K/V heads."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = apply_rotary(q, cos.to(q.dtype), sin.to(q.dtype))
        k = apply_rotary(k, cos.to(k.dtype), sin.to(k.dtype))
        if self.n_kv != self.n_heads:  # grouped-query attention: share each K/V head
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    """The gated MLP of Llama: down(silu(gate(x)) * up(x)) (Shazeer 2020)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """Embedding, the layer stack and the final norm (HF's `model.` prefix)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """Decoder-only language model. `forward(tokens, targets)` returns (logits, loss or None)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.extra_files: dict[str, bytes] = {}
        """Files that travel with the checkpoint (tokenizer); see checkpoint.io."""
        self.model = LlamaBody(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rotary_tables(cfg.max_position_embeddings, cfg.head_dim, cfg.rope_theta)
        # Buffers, not parameters: recomputed from the config, never saved or trained.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale residual output projections by depth so activations stay bounded.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                std = cfg.initializer_range / math.sqrt(2 * cfg.num_hidden_layers)
                nn.init.normal_(p, mean=0.0, std=std)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def forward(
        self, tokens: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = tokens.shape[1]
        if t > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {t} exceeds max_position_embeddings")
        cos, sin = self.get_buffer("rope_cos")[:t], self.get_buffer("rope_sin")[:t]
        x = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        logits = self.lm_head(self.model.norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_parameters(self) -> int:
        """Unique parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding (transformers' name for it)."""
        return self.model.embed_tokens


ModelConfig: TypeAlias = "LlamaConfig | HFConfig"
"""A model config of either implementation (both have param_count, to_hf_dict, vocab_size)."""
CausalLM: TypeAlias = "LlamaForCausalLM | HFCausalLM"
"""A model of either implementation: forward(tokens, targets) -> (logits, loss), .config."""


def config_from_dict(d: Any) -> ModelConfig:
    """The config a config.json dict describes: this file's Llama when it says so
    (`NATIVE_KEY`), else a transformers architecture (`training.hf.HFConfig`, checked and
    bounded). Raises ValueError (or TypeError) for anything invalid."""
    if not isinstance(d, dict):
        raise ValueError("a model config must be a JSON object")
    if d.get(NATIVE_KEY) == NATIVE:
        return LlamaConfig.from_hf_dict(d)
    from psyche_client.training.hf import HFConfig

    return HFConfig.from_hf_dict(d)


def input_embedding_names(model: nn.Module) -> frozenset[str]:
    """Names (as `named_parameters` gives them) of the parameters of the model's input token
    embedding (`get_input_embeddings()`, which both implementations have; none for a model
    without it). DeMo steps them at `DeMoConfig.embedding_lr_scale`·lr; the names depend on the
    architecture alone, so every client of a run derives the same set."""
    getter = getattr(model, "get_input_embeddings", None)
    module = getter() if callable(getter) else None
    if not isinstance(module, nn.Module):
        return frozenset()
    mine = {id(p) for p in module.parameters()}
    return frozenset(n for n, p in model.named_parameters() if id(p) in mine)


def build_model(
    cfg: ModelConfig, seed: int = 0, dtype: torch.dtype = torch.float32, init: bool = True
) -> CausalLM:
    """A freshly initialised model; the same seed gives the same weights on every client.
    `init=False` may skip the initialisation (for weights loaded right after)."""
    if not isinstance(cfg, LlamaConfig):
        from psyche_client.training.hf import build_hf_model

        return build_hf_model(cfg, seed=seed, dtype=dtype, init=init)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.to(dtype)


def state_sizes(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Bytes of every state-dict tensor of the model `cfg` describes, in `dtype`, computed on
    torch's meta device (nothing is allocated): what a peer serving this model must send."""
    with torch.device("meta"):
        model = build_model(cfg, dtype=dtype, init=False)
    return {n: t.numel() * t.element_size() for n, t in model.state_dict().items()}
