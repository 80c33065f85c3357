"""The per-chunk DCT: chunk sizing, orthonormality, exact round trips."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psyche_client.training import dct


def test_largest_divisor_picks_the_biggest_fitting_chunk() -> None:
    assert dct.largest_divisor_at_most(128, 16) == 16
    assert dct.largest_divisor_at_most(48, 32) == 24
    assert dct.largest_divisor_at_most(344, 64) == 43
    assert dct.largest_divisor_at_most(13, 16) == 13
    assert dct.largest_divisor_at_most(17, 16) == 1  # prime: no compression possible, still valid


def test_chunk_shapes_are_2d_for_matrices_and_1d_for_vectors() -> None:
    assert dct.chunk_shape((48,), 16) == (16,)
    assert dct.chunk_shape((128, 48), 16) == (16, 16)
    assert dct.chunk_shape((4, 6, 8), 16) == (6, 8)  # a stack of 4 (6, 8) matrices: (24, 8)
    assert dct.num_chunks((128, 48), (16, 16)) == 8 * 3


def test_basis_is_orthonormal() -> None:
    for n in (1, 2, 7, 16):
        b = dct.dct_basis(n, torch.float64)
        assert torch.allclose(b @ b.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


def test_constant_chunk_has_only_a_dc_coefficient() -> None:
    y = dct.encode(torch.ones(16, 16), (16, 16))
    assert y.shape == (1, 256)
    assert abs(float(y[0, 0]) - 16.0) < 1e-4
    assert float(y[0, 1:].abs().max()) < 1e-4


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    max_chunk=st.sampled_from([1, 4, 8, 16]),
    seed=st.integers(0, 1000),
)
def test_round_trip_and_energy_preservation(rows: int, cols: int, max_chunk: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for shape in ((rows,), (rows, cols)):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        chunk = dct.chunk_shape(shape, max_chunk)
        y = dct.encode(x, chunk)
        assert y.shape == (dct.num_chunks(shape, chunk), torch.tensor(chunk).prod().item())
        assert torch.allclose(dct.decode(y, shape, chunk), x, atol=1e-10)
        # Orthonormal: the transform preserves the sum of squares (Parseval).
        assert abs(float((y**2).sum() - (x**2).sum())) < 1e-8 * max(1.0, float((x**2).sum()))
