"""Per-chunk orthonormal DCT-II, the transform DeMo sparsifies in.

Why a DCT: momentum of neighbouring weights is correlated, so its energy concentrates in few
low-frequency DCT coefficients; keeping the top-k of each chunk keeps most of the signal (DeMo,
Peng, Quesnelle & Kingma 2024, §3). Why chunks: the transform is a small dense matmul per chunk,
cheap and embarrassingly parallel, and indices within a chunk fit in one byte for 16×16 chunks.

Matrices are cut into 2-D tiles (r × c) and transformed along both axes (Y = B_r X B_cᵀ); vectors
into 1-D pieces. Each side is the largest divisor of that dimension not above the configured
size, so every tensor tiles exactly, with no padding that a peer would have to agree on.
Tensors with more than two dimensions are viewed as (shape[0], rest).

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
    rows, cols = shape[0], math.prod(shape[1:])
    return (largest_divisor_at_most(rows, max_chunk), largest_divisor_at_most(cols, max_chunk))


def as_2d_or_1d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the transform works on: (n,) or (rows, cols)."""
    if len(shape) <= 1:
        return (shape[0] if shape else 1,)
    return (shape[0], math.prod(shape[1:]))


def num_chunks(shape: tuple[int, ...], chunk: tuple[int, ...]) -> int:
    work = as_2d_or_1d(shape)
    return math.prod(w // c for w, c in zip(work, chunk, strict=True))


@lru_cache(maxsize=64)
def dct_basis(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix B (n × n): B[k, i] = s_k cos(π (2i+1) k / 2n)."""
    i = torch.arange(n, dtype=torch.float64)
    k = i.view(-1, 1)
    b = torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    b[0] *= math.sqrt(1.0 / n)
    b[1:] *= math.sqrt(2.0 / n)
    return b.to(dtype)


def encode(x: torch.Tensor, chunk: tuple[int, ...]) -> torch.Tensor:
    """Tensor → DCT coefficients, one row per chunk: shape (num_chunks, chunk_numel)."""
    work = as_2d_or_1d(tuple(x.shape))
    if len(chunk) == 1:
        (c,) = chunk
        b = dct_basis(c, x.dtype)
        return x.reshape(-1, c) @ b.T
    (rows, cols), (r, c) = work, chunk
    tiles = x.reshape(rows // r, r, cols // c, c).permute(0, 2, 1, 3)
    y = dct_basis(r, x.dtype) @ tiles @ dct_basis(c, x.dtype).T
    return y.reshape(-1, r * c)


def decode(y: torch.Tensor, shape: tuple[int, ...], chunk: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `encode`: (num_chunks, chunk_numel) coefficients → tensor of `shape`."""
    work = as_2d_or_1d(shape)
    if len(chunk) == 1:
        (c,) = chunk
        return (y.reshape(-1, c) @ dct_basis(c, y.dtype)).reshape(shape)
    (rows, cols), (r, c) = work, chunk
    tiles = y.reshape(rows // r, cols // c, r, c)
    x = dct_basis(r, y.dtype).T @ tiles @ dct_basis(c, y.dtype)
    return x.permute(0, 2, 1, 3).reshape(shape)
