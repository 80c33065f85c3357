"""The client half of a DeMo step, batched: momentum update, DCT, top-k and error feedback for
all parameters of one chunk shape at once.

The momentum is kept **in coefficient space**: each `tiles` group holds one fp32
(rows, chunk_numel) buffer of the DCT coefficients of every chunk of its parameters' momentum.
The DCT is linear and orthonormal, so `DCT(β·m + w·g) = β·DCT(m) + w·DCT(g)` and the whole
update is one fused matmul per group (`M ← β·M + w·G·Bᵀ`, BLAS `addmm` with beta); error
feedback, "remove exactly what was sent", is zeroing the sent coefficients, with no inverse
transform at all. Per group a step is then: copy the gradients into tile rows, the fused
update, |M| into the same scratch, top-k per row, gather the values, zero them in M.

The result leaves the device once per group (indices and values, k / chunk_numel of the model),
and only then is split into per-parameter views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from psyche_client.training import dct
from psyche_client.training.result import DeMoResult, ParamComponent, ValueMode, index_dtype
from psyche_client.training.tiles import Group, TileLayout, gather_rows


def quantize(values: torch.Tensor, mode: ValueMode) -> torch.Tensor:
    if mode is ValueMode.FP32:
        return values.to(torch.float32)
    if mode is ValueMode.BF16:
        return values.to(torch.bfloat16)
    return torch.sign(values).to(torch.int8)  # sign(0) == 0: an exact zero stays zero


def _fold(group: Group, m: torch.Tensor, g: torch.Tensor, beta: float, weight: float) -> None:
    """m ← β·m + weight·DCT(g), in place (g is tile rows and is used as scratch)."""
    if group.numel <= dct.KRON_MAX:
        basis_t = dct.chunk_basis(group.chunk, torch.float32, m.device).T
        m.addmm_(g, basis_t, beta=beta, alpha=weight)
    else:
        m.mul_(beta).add_(dct.encode_chunks(g, group.chunk), alpha=weight)


def compress_layout(
    layout: TileLayout,
    momentum: Sequence[torch.Tensor],
    grads: Mapping[str, torch.Tensor | None],
    scratch: Sequence[torch.Tensor],
    beta: float,
    topk: int,
    mode: ValueMode,
    weight: float = 1.0,
) -> DeMoResult:
    """Updates the group momentum buffers in place and returns the components to share.

    `scratch` holds one buffer shaped like each momentum buffer; its contents are overwritten.
    """
    parts: dict[str, ParamComponent] = {}
    for group, m, s in zip(layout, momentum, scratch, strict=True):
        gather_rows(group, grads, s)
        _fold(group, m, s, beta, weight)
        torch.abs(m, out=s)
        k = min(topk, group.numel)
        _, idx = torch.topk(s, k, dim=1, sorted=False)
        idx, _ = torch.sort(idx, dim=1)  # canonical order: the same result encodes identically
        vals = torch.gather(m, 1, idx)
        m.scatter_(1, idx, 0.0)  # error feedback: what was sent is no longer owed
        # Results leave the device: they are encoded and sent over the network.
        idx_host = idx.to(index_dtype(group.numel)).cpu()
        vals_host = quantize(vals, mode).cpu()
        for slot in group.slots:
            parts[slot.name] = ParamComponent(
                shape=slot.shape,
                chunk=group.chunk,
                indices=idx_host[slot.start : slot.stop],
                values=vals_host[slot.start : slot.stop],
            )
    out = DeMoResult(value_mode=mode)
    for name in layout.chunk_of:  # model order, not group order
        out.params[name] = parts[name]
    return out


def load_momentum(
    layout: TileLayout, momentum: Mapping[str, torch.Tensor], bufs: Sequence[torch.Tensor]
) -> None:
    """Copies per-parameter momentum tensors (coefficient rows, any shape of the right size)
    into group buffers."""
    for group, buf in zip(layout, bufs, strict=True):
        for slot in group.slots:
            buf[slot.start : slot.stop].copy_(momentum[slot.name].reshape(-1, group.numel))


def momentum_views(layout: TileLayout, bufs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-parameter views of the group buffers, shaped like the parameters, in model order.

    Each holds that parameter's momentum as DCT coefficients, one chunk after another (not the
    momentum's values at the parameter's positions)."""
    views: dict[str, torch.Tensor] = {}
    for group, buf in zip(layout, bufs, strict=True):
        for slot in group.slots:
            views[slot.name] = buf[slot.start : slot.stop].view(slot.shape)
    return {name: views[name] for name in layout.chunk_of}
