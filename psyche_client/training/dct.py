"""Per-chunk orthonormal DCT-II, the transform DeMo sparsifies in.

Why a DCT: momentum of neighbouring weights is correlated, so its energy concentrates in few
low-frequency DCT coefficients; keeping the top-k of each chunk keeps most of the signal (DeMo,
Peng, Quesnelle & Kingma 2024, §3). Why chunks: the transform is a small dense matmul per chunk,
cheap and embarrassingly parallel, and indices within a chunk fit in one byte for 16×16 chunks.

Matrices are cut into 2-D tiles (r × c) and transformed along both axes (Y = B_r X B_cᵀ); vectors
into 1-D pieces. Each side is the largest divisor of that dimension not above the configured
size, so every tensor tiles exactly, with no padding that a peer would have to agree on.
Tensors with more than two dimensions (MoE experts stacked as (E, out, in)) are a stack of
matrices: viewed as one (E·out, in) matrix whose tile rows divide `out`, so no tile mixes two
experts (independent weights, no correlation for the DCT to use).

The basis is orthonormal, so decode(encode(x)) == x up to rounding and the inverse is the
transpose. Bases are built in float64 and cached per (size, dtype).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The chunk side for a dimension of size n: the largest d ≤ limit with n % d == 0."""
    if n <= 0 or limit <= 0:
        raise ValueError("sizes must be positive")
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1  # unreachable: 1 divides everything


def chunk_shape(shape: tuple[int, ...], max_chunk: int) -> tuple[int, ...]:
    """Chunk sides for a tensor: (c,) for vectors and scalars, (r, c) for everything else."""
    if len(shape) <= 1:
        n = shape[0] if shape else 1
        return (largest_divisor_at_most(n, max_chunk),)
    rows, cols = shape[-2], shape[-1]  # (for a stack, rows of one matrix: see module doc)
    return (largest_divisor_at_most(rows, max_chunk), largest_divisor_at_most(cols, max_chunk))


def as_2d_or_1d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the transform works on: (n,) or (rows, cols)."""
    if len(shape) <= 1:
        return (shape[0] if shape else 1,)
    return (math.prod(shape[:-1]), shape[-1])


def num_chunks(shape: tuple[int, ...], chunk: tuple[int, ...]) -> int:
    work = as_2d_or_1d(shape)
    return math.prod(w // c for w, c in zip(work, chunk, strict=True))


@lru_cache(maxsize=64)
def dct_basis(
    n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Orthonormal DCT-II matrix B (n × n): B[k, i] = s_k cos(π (2i+1) k / 2n)."""
    i = torch.arange(n, dtype=torch.float64)
    k = i.view(-1, 1)
    b = torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    b[0] *= math.sqrt(1.0 / n)
    b[1:] *= math.sqrt(2.0 / n)
    return b.to(dtype=dtype, device=device)


# Above this many coefficients per chunk the Kronecker matrix gets large (4096² fp32 = 64 MiB);
# use the separable two-sided product instead.
KRON_MAX = 1024


@lru_cache(maxsize=64)
def chunk_basis(
    chunk: tuple[int, ...], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The transform of a flattened chunk: B for 1-D, kron(B_r, B_c) for 2-D (row-major tiles).

    One (N, rc) @ (rc, rc) matmul over all chunks is much faster than N tiny two-sided products.
    """
    if len(chunk) == 1:
        return dct_basis(chunk[0], dtype, device)
    r, c = chunk
    k = torch.kron(dct_basis(r, torch.float64), dct_basis(c, torch.float64))
    return k.to(dtype=dtype, device=device)


def to_chunks(x: torch.Tensor, chunk: tuple[int, ...]) -> torch.Tensor:
    """Tensor → (num_chunks, chunk_numel), each row one chunk flattened row-major."""
    if len(chunk) == 1:
        return x.reshape(-1, chunk[0])
    (rows, cols), (r, c) = as_2d_or_1d(tuple(x.shape)), chunk
    return x.reshape(rows // r, r, cols // c, c).permute(0, 2, 1, 3).reshape(-1, r * c)


def from_chunks(y: torch.Tensor, shape: tuple[int, ...], chunk: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `to_chunks`."""
    if len(chunk) == 1:
        return y.reshape(shape)
    (rows, cols), (r, c) = as_2d_or_1d(shape), chunk
    return y.reshape(rows // r, cols // c, r, c).permute(0, 2, 1, 3).reshape(shape)


def encode_chunks(xc: torch.Tensor, chunk: tuple[int, ...]) -> torch.Tensor:
    """DCT of chunks already laid out as rows: (N, rc) → (N, rc)."""
    if len(chunk) == 2 and math.prod(chunk) > KRON_MAX:
        r, c = chunk
        t = xc.reshape(-1, r, c)
        return (
            dct_basis(r, xc.dtype, xc.device) @ t @ dct_basis(c, xc.dtype, xc.device).T
        ).reshape(-1, r * c)
    return xc @ chunk_basis(chunk, xc.dtype, xc.device).T


def decode_chunks(yc: torch.Tensor, chunk: tuple[int, ...]) -> torch.Tensor:
    """Inverse DCT of coefficient rows: (N, rc) → (N, rc) in chunk layout."""
    if len(chunk) == 2 and math.prod(chunk) > KRON_MAX:
        r, c = chunk
        t = yc.reshape(-1, r, c)
        return (
            dct_basis(r, yc.dtype, yc.device).T @ t @ dct_basis(c, yc.dtype, yc.device)
        ).reshape(-1, r * c)
    return yc @ chunk_basis(chunk, yc.dtype, yc.device)


def encode(x: torch.Tensor, chunk: tuple[int, ...]) -> torch.Tensor:
    """Tensor → DCT coefficients, one row per chunk: shape (num_chunks, chunk_numel)."""
    return encode_chunks(to_chunks(x, chunk), chunk)


def decode(y: torch.Tensor, shape: tuple[int, ...], chunk: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `encode`: (num_chunks, chunk_numel) coefficients → tensor of `shape`."""
    return from_chunks(decode_chunks(y, chunk), shape, chunk)


@lru_cache(maxsize=64)
def integer_basis(
    chunk: tuple[int, ...],
    levels: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """`chunk_basis(chunk)` scaled so its largest entry is `levels`, rounded to integers.

    The apply step only needs the sign of the inverse transform, and a product of small integers
    summed in floating point is exact whatever the summation order, so with this basis every
    machine, BLAS kernel and thread count computes the very same value (see `training.aggregate`).
    Rounding moves each entry by at most 0.5 / levels of the largest: a slightly different, but
    fixed and shared, reconstruction.
    """
    k = chunk_basis(chunk, torch.float64)
    return torch.round(k * (levels / float(k.abs().max()))).to(dtype=dtype, device=device)


@lru_cache(maxsize=64)
def integer_side_basis(
    n: int, levels: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The 1-D basis of side n as integers in [-levels, levels] (the separable path for large
    tiles; see `integer_basis`)."""
    b = dct_basis(n, torch.float64)
    return torch.round(b * (levels / float(b.abs().max()))).to(dtype=dtype, device=device)
