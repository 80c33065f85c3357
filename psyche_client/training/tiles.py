"""Where every parameter's DCT chunks live when all parameters are transformed together.

DeMo's work is the same small transform on every chunk of every parameter, so doing it one
parameter at a time costs a kernel launch (and a Python round trip) per parameter and leaves the
matmuls too small to run at full speed. Here the parameters are grouped by chunk shape (a model
has a handful: the (r, c) tiles of its matrices and the 1-D pieces of its norm weights), and each
group is one (rows, chunk_numel) buffer: parameter after parameter, one row per chunk, in model
order. One matmul then transforms a whole group.

`tile_view` is the strided view of a parameter-shaped tensor in which element [I, J, a, b] is
entry (a, b) of tile (I, J), so copying between a parameter and its rows of a group buffer is one
`copy_` with no intermediate tensor (`gather_rows`, `add_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from psyche_client.training import dct


@dataclass(frozen=True)
class Slot:
    """One parameter's rows [start, stop) in its group buffer."""

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int


@dataclass(frozen=True)
class Group:
    """All parameters that share one chunk shape, stacked row-wise in model order."""

    chunk: tuple[int, ...]
    rows: int
    slots: tuple[Slot, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.chunk)


class TileLayout:
    """The grouping of a fixed, ordered set of parameter shapes (see module docstring).

    Depends only on the names, shapes and order of the parameters and the chunk size, so every
    client of a run (and every verifier) derives the same groups, in the same order.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], chunk_size: int) -> None:
        order: dict[tuple[int, ...], list[Slot]] = {}
        rows: dict[tuple[int, ...], int] = {}
        self.chunk_of: dict[str, tuple[int, ...]] = {}
        for name, shape in shapes.items():
            shape = tuple(shape)
            chunk = dct.chunk_shape(shape, chunk_size)
            n = dct.num_chunks(shape, chunk)
            start = rows.get(chunk, 0)
            order.setdefault(chunk, []).append(Slot(name, shape, start, start + n))
            rows[chunk] = start + n
            self.chunk_of[name] = chunk
        self.groups: tuple[Group, ...] = tuple(
            Group(chunk, rows[chunk], tuple(slots)) for chunk, slots in order.items()
        )

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    def buffers(self, device: torch.device | str, dtype: torch.dtype = torch.float32):
        """One zeroed (rows, chunk_numel) buffer per group, in group order."""
        return [torch.zeros(g.rows, g.numel, dtype=dtype, device=device) for g in self.groups]


def tile_view(x: torch.Tensor, chunk: tuple[int, ...]) -> torch.Tensor:
    """A view of the parameter-shaped `x`: (pieces, c) for 1-D chunks, (R/r, C/c, r, c) for
    tiles. Writes through it land in `x`."""
    if len(chunk) == 1:
        return x.reshape(-1, chunk[0])
    rows, cols = dct.as_2d_or_1d(tuple(x.shape))
    r, c = chunk
    return x.reshape(rows // r, r, cols // c, c).permute(0, 2, 1, 3)


def slot_rows(buf: torch.Tensor, slot: Slot, chunk: tuple[int, ...]) -> torch.Tensor:
    """The slot's rows of a group buffer, shaped like `tile_view` of the parameter."""
    part = buf[slot.start : slot.stop]
    if len(chunk) == 1:
        return part
    rows, cols = dct.as_2d_or_1d(slot.shape)
    r, c = chunk
    return part.view(rows // r, cols // c, r, c)


def gather_rows(
    group: Group, tensors: Mapping[str, torch.Tensor | None], out: torch.Tensor
) -> torch.Tensor:
    """Copies each parameter-shaped tensor of the group into its rows of `out` (a missing or
    None tensor leaves zeros)."""
    for slot in group.slots:
        t = tensors.get(slot.name)
        dst = slot_rows(out, slot, group.chunk)
        if t is None:
            dst.zero_()
        else:
            dst.copy_(tile_view(t.detach(), group.chunk))
    return out


def add_rows(
    group: Group,
    params: Mapping[str, torch.Tensor],
    rows: torch.Tensor,
    alpha: float,
    scales: Mapping[str, float] | None = None,
) -> None:
    """params[name] += alpha · scales[name] · (its rows of `rows`), in place, for every slot of
    the group (a name missing from `scales` has scale 1)."""
    for slot in group.slots:
        p = params[slot.name]
        if not p.is_contiguous():  # reshape would copy, and the update would be lost
            raise ValueError(f"{slot.name}: parameters must be contiguous")
        a = alpha * scales.get(slot.name, 1.0) if scales else alpha
        tile_view(p, group.chunk).add_(slot_rows(rows, slot, group.chunk), alpha=a)
