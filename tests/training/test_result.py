"""Result wire format: round trips, sizes, strict rejection of malformed payloads, commitment."""

from __future__ import annotations

import hashlib
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psyche_client.training.model import LlamaConfig, build_model
from psyche_client.training.optimizer import DeMo, DeMoConfig
from psyche_client.training.result import (
    DecodeLimits,
    DeMoResult,
    ResultFormatError,
    ValueMode,
    commitment,
    decode_result,
    encode_result,
)


def _result(mode: ValueMode, seed: int = 0, zero_param: bool = False) -> DeMoResult:
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = build_model(cfg, seed=seed)
    demo = DeMo(model.named_parameters(), DeMoConfig(chunk_size=16, topk=4, value_mode=mode))
    g = torch.Generator().manual_seed(seed)
    grads = {n: torch.randn(p.shape, generator=g) for n, p in demo.params.items()}
    if zero_param:
        grads.pop("model.norm.weight")
    return demo.compress(grads)


def _assert_equal(a: DeMoResult, b: DeMoResult) -> None:
    assert a.value_mode == b.value_mode and list(a.params) == list(b.params)
    for n in a.params:
        x, y = a.params[n], b.params[n]
        assert (x.shape, x.chunk) == (y.shape, y.chunk)
        assert x.indices.dtype == y.indices.dtype and torch.equal(x.indices, y.indices)
        assert x.values.dtype == y.values.dtype and torch.equal(x.values, y.values)


@pytest.mark.parametrize("mode", list(ValueMode))
def test_round_trip_every_value_mode(mode: ValueMode) -> None:
    res = _result(mode, zero_param=True)
    data = encode_result(res)
    back = decode_result(data)
    _assert_equal(res, back)
    assert encode_result(back) == data  # canonical: re-encoding gives the same bytes


def test_one_bit_payload_is_about_one_byte_per_index_plus_a_bit_per_value() -> None:
    res = _result(ValueMode.SIGN)
    n = sum(c.indices.numel() for c in res.params.values())
    size = len(encode_result(res))
    body = n + sum((c.indices.numel() + 7) // 8 for c in res.params.values())
    header = size - body
    assert 0 < header < 32 * len(res.params)  # front-coded names, varint shapes: <32 B/tensor
    fp32 = len(encode_result(_result(ValueMode.FP32)))
    assert fp32 - header == n * 5  # 1-byte index + 4-byte value


def test_zeros_survive_one_bit_round_trip() -> None:
    res = _result(ValueMode.SIGN, zero_param=True)
    back = decode_result(encode_result(res))
    assert set(back.params["model.norm.weight"].values.unique().tolist()) == {0}


def _v(n: int) -> bytes:
    """LEB128 varint, as the format uses."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _header(mode: int = 2, version: int = 1, n: int = 1) -> bytes:
    return b"PSDR" + struct.pack("<BB", version, mode) + _v(n)


def _record(
    name=b"w", shape=(16,), chunk=(16,), k=2, n_zero=0, idx=(1, 3), tail=b"\x00", shared=0
) -> bytes:
    out = struct.pack("<BB", shared, len(name)) + name
    out += bytes([len(shape)]) + b"".join(_v(d) for d in shape)
    out += bytes([len(chunk)]) + b"".join(_v(d) for d in chunk)
    out += _v(k) + _v(n_zero) + bytes(idx) + tail
    return out


def test_hand_built_payload_decodes() -> None:
    res = decode_result(_header() + _record(tail=b"\x01"))
    assert res.params["w"].values.tolist() == [[-1, 1]]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "truncated"),
        (b"XXXX" + _header()[4:] + _record(), "magic"),
        (_header(version=2) + _record(), "version"),
        (_header(mode=7) + _record(), "value mode"),
        (_header(n=2) + _record(), "truncated"),
        (_header() + _record() + b"\x00", "trailing"),
        (_header() + _record(idx=(3, 1)), "increasing"),
        (_header() + _record(idx=(3, 3)), "increasing"),
        (_header() + _record(shape=(16,), chunk=(16,), idx=(1, 16)), "out of range"),
        (_header() + _record(chunk=(5,)), "tile"),
        (_header() + _record(k=0, idx=()), "k=0"),
        (_header() + _record(k=17), "k=17"),
        (_header() + _record(tail=b"\x04"), "padding"),
        (_header() + _record(n_zero=1, tail=b"\x01" + _v(0)), "sign bit"),
        (_header() + _record(n_zero=1, tail=b"\x00" + _v(2)), "out of range"),
        (_header() + _record(n_zero=2, tail=b"\x00" + _v(1) + _v(0)), "out of range"),
        (_header() + _record(n_zero=3), "zeros among"),
        (_header() + _record(shape=(0,)), "zero dimension"),
        (_header() + _record(name=b"\xff"), "UTF-8"),
        (_header(n=2) + _record() + _record(name=b"", shared=1), "duplicate"),
        (_header(mode=0) + _record(tail=struct.pack("<2f", 1.0, float("nan"))), "non-finite"),
        (_header(mode=0) + _record(n_zero=1, tail=b"\x00" * 12), "only valid in 1-bit"),
        (_header(n=1 << 30), "limit"),
        (b"PSDR\x01\x02\x81\x00" + _record(), "shortest form"),
        (b"PSDR\x01\x02\xff\xff\xff\xff\xff\x01", "longer than 5"),
        (b"PSDR\x01\x02\xff\xff\xff\xff\x7f", "exceeds u32"),
        (_header(n=2) + _record(name=b"ab") + _record(name=b"c", shared=3), "shares 3"),
        (_header(n=2) + _record(name=b"ab") + _record(name=b"ac", shared=0), "non-canonical"),
    ],
)
def test_malformed_payloads_are_rejected_with_a_clear_error(payload: bytes, message: str) -> None:
    with pytest.raises(ResultFormatError, match=message):
        decode_result(payload)


def test_oversized_payload_is_rejected_before_parsing() -> None:
    data = encode_result(_result(ValueMode.SIGN))
    with pytest.raises(ResultFormatError, match="exceeds"):
        decode_result(data, DecodeLimits(max_bytes=len(data) - 1))


def test_huge_declared_shape_is_rejected_without_allocating() -> None:
    # 2^32-1 squared elements declared, but only a few bytes present: must fail fast.
    rec = _record(shape=(0xFFFFFFFF, 0xFFFFFFFF), chunk=(1, 1), k=1, idx=(0,))
    with pytest.raises(ResultFormatError, match="element limit"):
        decode_result(_header() + rec)
    rec = _record(shape=(1 << 20, 1 << 10), chunk=(1, 1), k=1, idx=(0,))
    with pytest.raises(ResultFormatError, match="truncated"):
        decode_result(_header() + rec)


def test_every_truncation_of_a_valid_payload_is_rejected() -> None:
    data = encode_result(_result(ValueMode.SIGN, zero_param=True))
    for cut in range(0, len(data), max(1, len(data) // 300)):
        with pytest.raises(ResultFormatError):
            decode_result(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        decode_result(_header()[:4] + data)
    except ResultFormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_bit_flips_either_decode_or_raise_format_error(pos: int, bit: int) -> None:
    data = bytearray(encode_result(_result(ValueMode.BF16)))
    data[pos % len(data)] ^= 1 << bit
    try:
        decode_result(bytes(data))
    except ResultFormatError:
        pass


def test_commitment_is_sha256_of_the_documented_encoding() -> None:
    run, payload = b"run-1", b"\x01\x02\x03"
    expected = hashlib.sha256(
        struct.pack("<I", 5) + run + struct.pack("<QQQ", 7, 9, 3) + payload
    ).digest()
    assert commitment(run, 7, 9, payload) == expected
    # Length prefixes: moving bytes between run id and payload changes the digest.
    assert commitment(b"run-", 7, 9, b"1" + payload) != commitment(run, 7, 9, payload)
    assert commitment(run, 7, 9, payload) != commitment(run, 9, 7, payload)
    with pytest.raises(ValueError):
        commitment(run, -1, 0, payload)


def test_scattered_zeros_round_trip_compactly() -> None:
    from psyche_client.training.result import ParamComponent

    rows, k = 64, 4
    vals = torch.ones(rows, k, dtype=torch.int8)
    vals[0, 0] = 0
    vals[1, 3] = 0
    vals[40:, :] = 0  # a run of zeros (e.g. rows of an embedding no batch touched)
    vals[2, 1] = -1
    idx = torch.arange(k, dtype=torch.uint8).repeat(rows, 1)
    comp = ParamComponent((rows * 16,), (16,), idx, vals)
    res = DeMoResult(ValueMode.SIGN, {"w": comp})
    data = encode_result(res)
    assert torch.equal(decode_result(data).params["w"].values, vals)
    n_zero = int((vals == 0).sum())
    assert len(data) < 40 + rows * k + rows * k // 8 + n_zero * 2  # ~1 byte per zero
