"""Hugging Face architectures (Llama, Qwen2, Qwen3, Mistral, Qwen3-MoE, Mixtral) through
`transformers`, behind the interface the client already uses for its own Llama.

Why an adapter rather than the transformers model itself: the trainer, DeMo, verification and
model sharing call `model(tokens, targets) -> (logits, loss)`, read `model.config.vocab_size`
and `param_count()`, and key everything by `named_parameters()`. `HFCausalLM` gives exactly
that, and registers the transformers model's own children (`model`, `lm_head`) on itself, so
parameter names are transformers' names (`model.layers.0.mlp.experts.gate_up_proj`, ...) and
`state_dict()` is the transformers state dict.

The model config (`HFConfig`) is a config.json dict, and it travels: in checkpoints, in the
config blob a peer serves with its tensors, in the run's checkpoint directory. It comes from
peers and URLs, so it is checked before anything is built: a known `model_type`, integer shape
fields within bounds, and a parameter count (computed on torch's meta device, which allocates
nothing) under `MAX_PARAMS`. Its canonical form is the dict as given minus metadata that is not
architecture (`transformers_version`, `dtype`, the loading machine's `_name_or_path`, ...), so
every client holding the same model holds byte-identical config JSON, whichever transformers
version it runs and however it got the model (checkpoint, peers).

Nothing here touches the network: models are built from a config (`from_config`) or loaded
from a local directory (`from_pretrained(dir, local_files_only=True)`, safetensors only).
Attention is torch's SDPA, which is deterministic on CPU (the verification recompute and the
bit-identical apply rely on every client computing the same thing).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from psyche_client.training.model import _INT_BOUNDS, MAX_PARAMS

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

SUPPORTED_TYPES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "mixtral": "MixtralForCausalLM",
}
"""model_type → the causal LM class transformers builds for it (the ones tested here)."""

_HF_INT_BOUNDS: dict[str, tuple[int, int]] = {
    **_INT_BOUNDS,
    "head_dim": (1, 1 << 12),
    "moe_intermediate_size": (1, 1 << 18),
    "num_experts": (1, 1 << 12),
    "num_local_experts": (1, 1 << 12),
    "num_experts_per_tok": (1, 1 << 12),
    "sliding_window": (1, 1 << 22),
    "max_window_layers": (0, 1 << 12),
}
_LAYER_MODULES_MAX = 1 << 17
"""layers × experts: bounds the time a meta-device build (for the parameter count) may take."""
_NOT_ARCHITECTURE = (
    "transformers_version",
    "_name_or_path",
    "_commit_hash",
    "dtype",
    "torch_dtype",
    "attn_implementation",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "auto_map",
)
"""Keys dropped from the canonical config: metadata, the loading machine's state, remote code."""
_REFUSED = ("quantization_config",)
ATTN_IMPLEMENTATION = "sdpa"


def _quiet_transformers() -> None:
    """transformers prints progress bars and advice on stderr for every load and save; the
    client's log is for the run."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _check_int(name: str, v: Any, lo: int, hi: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {v!r}")


class HFConfig:
    """A checked, canonical config.json dict of a supported transformers causal LM."""

    __slots__ = ("_data", "_json", "_params", "_resolved")

    def __init__(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise ValueError("a model config must be a JSON object")
        raw = dict(data)
        mt = raw.get("model_type")
        if mt not in SUPPORTED_TYPES:
            raise ValueError(
                f"model_type {mt!r} is not supported (one of {', '.join(SUPPORTED_TYPES)})"
            )
        for key in _REFUSED:
            if raw.get(key) is not None:
                raise ValueError(f"{key}: quantized checkpoints are not trainable here")
        # Untyped input: check the shape fields it sets before transformers sees them.
        for name, (lo, hi) in _HF_INT_BOUNDS.items():
            if raw.get(name) is not None:
                _check_int(name, raw[name], lo, hi)
        canon = {k: v for k, v in raw.items() if k not in _NOT_ARCHITECTURE}
        canon.setdefault("architectures", [SUPPORTED_TYPES[mt]])
        try:
            text = json.dumps(canon, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model config is not plain JSON ({e})") from None
        self._data: dict[str, Any] = json.loads(text)
        self._json = text
        self._resolved = self._resolve()
        self._params = self._count_params()

    # -- construction helpers -------------------------------------------------------------

    def _resolve(self) -> PretrainedConfig:
        from transformers import AutoConfig

        kwargs = {k: v for k, v in self._data.items() if k != "model_type"}
        try:
            cfg = AutoConfig.for_model(self._data["model_type"], **kwargs)
        except Exception as e:  # noqa: BLE001 - transformers raises many types for bad values
            raise ValueError(f"transformers rejects the config ({e})") from None
        # Defaults filled in by transformers are checked too (a config may omit a field).
        for name, (lo, hi) in _HF_INT_BOUNDS.items():
            v = getattr(cfg, name, None)
            if v is not None:
                _check_int(name, v, lo, hi)
        heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or 0
        if kv and heads % kv:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        head_dim = getattr(cfg, "head_dim", None)
        if head_dim is None and cfg.hidden_size % heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if (head_dim or cfg.hidden_size // heads) % 2:
            raise ValueError("the head dimension must be even for rotary embeddings")
        experts = getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None)
        if experts and getattr(cfg, "num_experts_per_tok", 1) > experts:
            raise ValueError("num_experts_per_tok must not exceed the number of experts")
        if cfg.num_hidden_layers * max(1, experts or 1) > _LAYER_MODULES_MAX:
            raise ValueError(f"layers × experts must be at most {_LAYER_MODULES_MAX}")
        # A lower bound (embedding, q/o projections, the cheaper of the dense and expert MLP)
        # refuses the huge before the exact count builds anything, even on the meta device.
        hd = head_dim or cfg.hidden_size // heads
        mlp = cfg.intermediate_size
        if experts:
            per = getattr(cfg, "moe_intermediate_size", None) or cfg.intermediate_size
            mlp = min(mlp, experts * per)
        low = cfg.vocab_size * cfg.hidden_size + cfg.num_hidden_layers * cfg.hidden_size * (
            2 * heads * hd + 3 * mlp
        )
        if low > MAX_PARAMS:
            raise ValueError(f"the config implies at least {low:,} parameters (> {MAX_PARAMS:,})")
        cfg._attn_implementation = ATTN_IMPLEMENTATION
        return cfg

    def _count_params(self) -> int:
        from transformers import AutoModelForCausalLM

        _quiet_transformers()
        try:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(self.pretrained())
        except Exception as e:  # noqa: BLE001 - a config transformers cannot build
            raise ValueError(f"transformers cannot build the config ({e})") from None
        n = sum(p.numel() for p in model.parameters())
        if n > MAX_PARAMS:
            raise ValueError(f"the config implies {n:,} parameters (> {MAX_PARAMS:,})")
        return n

    # -- the interface the client uses (shared with LlamaConfig) -----------------------------

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any]) -> HFConfig:
        return cls(d)

    def to_hf_dict(self) -> dict[str, Any]:
        """The canonical config.json content (a copy)."""
        return copy.deepcopy(self._data)

    def pretrained(self) -> PretrainedConfig:
        """A fresh transformers config object (callers may change it)."""
        return copy.deepcopy(self._resolved)

    def param_count(self) -> int:
        """Unique parameters of the model (a tied head counts once), without building it."""
        return self._params

    @property
    def model_type(self) -> str:
        return str(self._data["model_type"])

    @property
    def vocab_size(self) -> int:
        return int(self._resolved.vocab_size)

    @property
    def hidden_size(self) -> int:
        return int(self._resolved.hidden_size)

    @property
    def num_hidden_layers(self) -> int:
        return int(self._resolved.num_hidden_layers)

    @property
    def max_position_embeddings(self) -> int:
        return int(self._resolved.max_position_embeddings)

    @property
    def tie_word_embeddings(self) -> bool:
        return bool(getattr(self._resolved, "tie_word_embeddings", False))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HFConfig) and other._json == self._json

    def __hash__(self) -> int:
        return hash(self._json)

    def __repr__(self) -> str:
        return f"HFConfig({self.model_type}, {self._params:,} parameters)"


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Skip weight initialisation when the weights are overwritten right after."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        yield


class HFCausalLM(nn.Module):
    """A transformers causal LM with the client's interface (see module docstring)."""

    def __init__(self, config: HFConfig, hf_model: PreTrainedModel) -> None:
        super().__init__()
        self.config = config
        for name, child in hf_model.named_children():
            self.add_module(name, child)  # same objects: names and storage are transformers'
        own = dict(hf_model.named_parameters(recurse=False))
        if own:  # (no supported architecture has any; refuse rather than silently not train)
            raise ValueError(f"parameters outside submodules: {sorted(own)}")
        object.__setattr__(self, "hf", hf_model)  # not a submodule: no second set of names
        self.extra_files: dict[str, bytes] = {}
        """Files that travel with the checkpoint (tokenizer); see checkpoint.io."""
        self._aux_coef = (
            float(getattr(hf_model.config, "router_aux_loss_coef", 0.0) or 0.0)
            if getattr(hf_model.config, "output_router_logits", False)
            else 0.0
        )

    def train(self, mode: bool = True) -> HFCausalLM:
        super().train(mode)
        self.hf.training = mode
        return self

    def forward(
        self, tokens: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = tokens.shape[1]
        if t > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {t} exceeds max_position_embeddings")
        kwargs: dict[str, Any] = {"use_cache": False}
        if self._aux_coef:
            kwargs["output_router_logits"] = True
        out = self.hf(input_ids=tokens, **kwargs)
        logits = out.logits
        loss = None
        if targets is not None:
            # The same loss as the own Llama: mean next-token cross-entropy in fp32 (targets are
            # already shifted by the caller), plus the MoE load-balancing term when the config
            # asks for it.
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
            aux = getattr(out, "aux_loss", None)
            if self._aux_coef and aux is not None:
                loss = loss + self._aux_coef * aux.float()
        return logits, loss

    def num_parameters(self) -> int:
        """Unique parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding, as transformers finds it for the architecture."""
        return self.hf.get_input_embeddings()


def build_hf_model(
    cfg: HFConfig, seed: int = 0, dtype: torch.dtype = torch.float32, init: bool = True
) -> HFCausalLM:
    """A model for `cfg`, initialised by transformers' own init under `seed` (the global RNG
    is restored afterwards), so the same config and seed give the same weights on every client
    with the same transformers version. Built on CPU in fp32, then cast. `init=False` skips
    the init for weights that are loaded right after."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with _no_init() if not init else contextlib.nullcontext():
            hf = AutoModelForCausalLM.from_config(cfg.pretrained())
    finally:
        torch.random.set_rng_state(state)
    return HFCausalLM(cfg, hf.to(torch.float32)).to(dtype)


def _dtype_kwarg() -> str:
    """from_pretrained's dtype argument: `dtype` since transformers 4.56, `torch_dtype` before."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


class LoadError(ValueError):
    """A directory's weights do not fit its config (missing, unexpected or misshapen)."""


def load_hf_pretrained(
    directory: str | os.PathLike[str], cfg: HFConfig, dtype: torch.dtype = torch.float32
) -> HFCausalLM:
    """The model in a local HF directory (single or sharded safetensors, in any layout
    transformers reads, e.g. per-expert MoE weights), loaded strictly: a missing, unexpected or
    misshapen tensor is a `LoadError`, never a silently re-initialised weight."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    try:
        hf, info = AutoModelForCausalLM.from_pretrained(
            os.fspath(directory),
            config=cfg.pretrained(),
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            output_loading_info=True,
            **{_dtype_kwarg(): torch.float32},
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise LoadError(f"transformers could not load it ({first})") from None
    tied = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    missing = sorted(set(info.get("missing_keys", ())) - tied)
    unexpected = sorted(info.get("unexpected_keys", ()))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        raise LoadError(
            f"weights do not match config (missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {mismatched[:5]})"
        )
    return HFCausalLM(cfg, hf).to(dtype)


def save_hf_weights(model: HFCausalLM, directory: Path, max_shard_bytes: int) -> list[str]:
    """Writes the weights as transformers would publish them (its own on-disk layout, e.g.
    per-expert MoE tensors, sharded with an index above `max_shard_bytes`) into `directory`,
    which should be empty; returns the file names written (config files excluded: the caller
    writes the canonical ones)."""
    _quiet_transformers()
    model.hf.save_pretrained(
        str(directory), max_shard_size=max(1, int(max_shard_bytes)), safe_serialization=True
    )
    names = [p.name for p in directory.iterdir() if p.name.endswith((".safetensors", ".json"))]
    return sorted(n for n in names if n not in ("config.json", "generation_config.json"))


MOE_TYPES = {"qwen3_moe": "num_experts", "mixtral": "num_local_experts"}
"""The mixture-of-experts architectures, and the config key of their expert count."""


def arch_config(
    model_type: str,
    *,
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    max_position_embeddings: int,
    tie_word_embeddings: bool = False,
    num_experts: int = 4,
    num_experts_per_tok: int = 2,
) -> dict[str, Any]:
    """A config.json dict for a (small) model of a supported architecture, pretraining from
    scratch: the shape fields given, transformers' defaults for the rest. For a MoE type,
    `intermediate_size` is each expert's."""
    if model_type not in SUPPORTED_TYPES:
        raise ValueError(
            f"unknown architecture {model_type!r} (one of {', '.join(SUPPORTED_TYPES)})"
        )
    d: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [SUPPORTED_TYPES[model_type]],
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": tie_word_embeddings,
    }
    if model_type in ("qwen3", "qwen3_moe"):
        d["head_dim"] = hidden_size // num_attention_heads  # (Qwen3 defaults to 128)
    if model_type in MOE_TYPES:
        d[MOE_TYPES[model_type]] = num_experts
        d["num_experts_per_tok"] = num_experts_per_tok
    if model_type == "qwen3_moe":
        d["moe_intermediate_size"] = intermediate_size
    return d
