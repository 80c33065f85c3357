"""One client's DeMo result for one step: the in-memory type, its wire format, its commitment.

A result is, for every trainable parameter (by name, in model order), the top-k DCT coefficients
of each chunk of the client's momentum: a (num_chunks, k) index tensor and a matching value
tensor. Peers receive it over the network, so decoding is strict and bounded.

Wire format, version 1. `var` is an unsigned LEB128 varint in its shortest form (at most 5 bytes,
value < 2³²); fixed-width integers are little-endian::

    magic        4 bytes  b"PSDR"
    version      u8       1
    value_mode   u8       0 = fp32, 1 = bf16, 2 = 1-bit sign
    n_params     var
    then n_params records:
      name       u8 shared, u8 len, len bytes: the name is the first `shared` bytes of the
                 previous record's name followed by these bytes (front coding; `shared` is the
                 longest common prefix, capped at 255); UTF-8, 1..255 bytes, unique
      ndim       u8 (0..MAX_NDIM), shape  var × ndim      (the parameter's shape)
      cdim       u8 (1 or 2),      chunk  var × cdim      (chunk sides; must tile the shape)
      k          var (1..chunk numel)                     (coefficients kept per chunk)
      n_zero     var (0 unless 1-bit; ≤ n)                (exact zeros among the values)
      indices    n × w bytes, w = 1, 2 or 4: the smallest unsigned width holding chunk numel − 1;
                 per chunk strictly increasing (canonical order, no duplicates)
      values     fp32: 4n bytes; bf16: 2n bytes; 1-bit: ceil(n/8) bytes, bit i (LSB first) set
                 means value i is negative, padding bits zero; then the positions of the n_zero
                 values that are exactly 0 (their sign bit clear), strictly increasing, as
                 n_zero varint gaps: the first position, then each position − previous − 1
    where n = num_chunks × k. Nothing may follow the last record.

Why the zero list: one bit cannot say "zero", but a coefficient whose momentum is exactly 0
(a parameter that got no gradient) must not turn into a +1 step on every peer.
Why canonical (shortest varints, maximal shared prefixes, sorted indices, zero padding): the
same result always encodes to the same bytes, so its commitment is unique.
Why front coding and varints: with 16×16 chunks, k = 4 and 1 bit per value the payload is
4.5 bytes per 256 parameters, so for small models fixed-width headers and repeated
"model.layers.N." prefixes were >10% of it; they now cost ~30 bytes per parameter tensor.

The commitment (docs/training.md) is SHA-256 over a length-prefixed encoding of
(run_id, step, batch_id, payload), so no two different tuples can produce the same hashed bytes.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
import torch

from psyche_client.training.dct import as_2d_or_1d, num_chunks

MAGIC = b"PSDR"
VERSION = 1
MAX_NAME = 255
MAX_NDIM = 8


class ResultFormatError(ValueError):
    """A result payload is malformed, oversized or does not match the model."""


class ValueMode(IntEnum):
    """How the kept coefficients' values travel."""

    FP32 = 0
    BF16 = 1
    SIGN = 2  # 1 bit per value (+ an explicit list of exact zeros)


def index_dtype(chunk_numel: int) -> torch.dtype:
    """Smallest integer type that holds every index into a chunk of `chunk_numel` coefficients.

    torch lacks a general uint16, so the in-memory 2-byte type is int16 (up to 32768 entries);
    the wire always uses the unsigned width of the same size.
    """
    if chunk_numel <= 256:
        return torch.uint8
    if chunk_numel <= 32768:
        return torch.int16
    return torch.int32


def _wire_width(dtype: torch.dtype) -> int:
    return {torch.uint8: 1, torch.int16: 2, torch.int32: 4}[dtype]


@dataclass
class ParamComponent:
    """The kept coefficients of one parameter: indices and values, both (num_chunks, k)."""

    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    indices: torch.Tensor  # uint8 / int16 / int32, per row strictly increasing
    values: torch.Tensor  # float32, bfloat16, or int8 in {-1, 0, 1} for 1-bit mode

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    @property
    def chunk_numel(self) -> int:
        return math.prod(self.chunk)


@dataclass
class DeMoResult:
    """One client's compressed update for one step, keyed by parameter name in model order."""

    value_mode: ValueMode
    params: dict[str, ParamComponent] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return encode_result(self)

    @classmethod
    def from_bytes(cls, data: bytes, limits: DecodeLimits | None = None) -> DeMoResult:
        return decode_result(data, limits)


@dataclass(frozen=True)
class DecodeLimits:
    """Caps applied before anything is allocated. Defaults fit models up to a few billion params
    with 16×16 chunks and k ≤ 16 in 1-bit mode; raise them for larger runs."""

    max_bytes: int = 512 * 1024 * 1024
    max_params: int = 65536
    max_param_numel: int = 1 << 36


def _np_values(comp: ParamComponent, mode: ValueMode) -> tuple[bytes, bytes, int]:
    """Value bytes, zero-position bytes and zero count for one component."""
    v = comp.values.reshape(-1)
    if mode is ValueMode.FP32:
        return v.to(torch.float32).numpy().astype("<f4").tobytes(), b"", 0
    if mode is ValueMode.BF16:
        return v.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes(), b"", 0
    vi = v.to(torch.int8).numpy()
    bits = np.packbits(vi < 0, bitorder="little").tobytes()
    zeros = np.flatnonzero(vi == 0)
    gaps = np.diff(zeros, prepend=-1) - 1  # ≥ 0; zeros are often runs, so mostly 1-byte gaps
    return bits, b"".join(_varint(int(g)) for g in gaps), int(zeros.size)


def _varint(n: int) -> bytes:
    """Shortest unsigned LEB128 encoding of 0 ≤ n < 2³²."""
    if not 0 <= n < 1 << 32:
        raise ValueError(f"{n} does not fit a u32 varint")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _shared_prefix(a: bytes, b: bytes) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y or n == 255:
            break
        n += 1
    return n


def encode_result(result: DeMoResult) -> bytes:
    """Serialises a result in the canonical version-1 format described in the module docstring."""
    mode = ValueMode(result.value_mode)
    parts = [MAGIC, struct.pack("<BB", VERSION, int(mode)), _varint(len(result.params))]
    prev = b""
    for name, comp in result.params.items():
        nb = name.encode("utf-8")
        if not 0 < len(nb) <= MAX_NAME:
            raise ValueError(f"parameter name {name!r} must be 1..{MAX_NAME} UTF-8 bytes")
        shared = _shared_prefix(prev, nb)
        parts.append(struct.pack("<BB", shared, len(nb) - shared) + nb[shared:])
        prev = nb
        parts.append(bytes([len(comp.shape)]) + b"".join(_varint(d) for d in comp.shape))
        parts.append(bytes([len(comp.chunk)]) + b"".join(_varint(d) for d in comp.chunk))
        vals, zeros, nz = _np_values(comp, mode)
        parts.append(_varint(comp.k) + _varint(nz))
        width = _wire_width(index_dtype(comp.chunk_numel))
        idx = comp.indices.reshape(-1).to(torch.int64).numpy().astype(f"<u{width}")
        parts.extend((idx.tobytes(), vals, zeros))
    return b"".join(parts)


class _Reader:
    """Bounds-checked cursor: every read first checks the bytes exist."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ResultFormatError(
                f"truncated payload: {what} needs {n} bytes at offset {self.pos}, "
                f"{len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def varint(self, what: str) -> int:
        """A shortest-form LEB128 u32; overlong or oversized encodings are rejected."""
        n = 0
        for i in range(5):
            (byte,) = self.take(1, what)
            n |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and byte == 0:
                    raise ResultFormatError(f"{what}: varint not in shortest form")
                if n >= 1 << 32:
                    raise ResultFormatError(f"{what}: varint exceeds u32")
                return n
        raise ResultFormatError(f"{what}: varint longer than 5 bytes")


def _check_shape(name: str, shape: tuple[int, ...], chunk: tuple[int, ...], limits: DecodeLimits):
    if any(s <= 0 for s in shape):
        raise ResultFormatError(f"{name}: shape {shape} has a zero dimension")
    if math.prod(shape) > limits.max_param_numel:
        raise ResultFormatError(f"{name}: shape {shape} exceeds the element limit")
    work = as_2d_or_1d(shape)
    if len(chunk) != len(work):
        raise ResultFormatError(f"{name}: chunk {chunk} does not match shape {shape}")
    for w, c in zip(work, chunk, strict=True):
        if c <= 0 or w % c:
            raise ResultFormatError(f"{name}: chunk {chunk} does not tile shape {shape}")


Layout = Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]
"""Parameter name -> (shape, chunk), in model order: what a result for this model must cover."""

ZERO_BLOCK = 1 << 15
"""Zero-list varints decoded per vectorised block: bounds the temporaries (~40 bytes per entry)
whatever the list's length, instead of one Python int per entry."""


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def result_size_bound(layout: Layout, k: int | None = None, mode: ValueMode | None = None) -> int:
    """The largest canonical payload a result for `layout` can be (with `k`, `mode` when known;
    otherwise the largest k and widest values). A payload or announcement above it cannot be a
    result for this model, so it is refused before anything is fetched or parsed."""
    total = 4 + 2 + _varint_len(len(layout))
    for name, (shape, chunk) in layout.items():
        cnumel = math.prod(chunk)
        kk = min(k, cnumel) if k is not None else cnumel
        n = num_chunks(tuple(shape), tuple(chunk)) * kk
        total += 2 + len(name.encode("utf-8")) + 2
        total += sum(_varint_len(d) for d in (*shape, *chunk)) + _varint_len(kk) + 5
        total += n * _wire_width(index_dtype(cnumel))
        if mode is None or mode is ValueMode.FP32:
            total += 4 * n
        elif mode is ValueMode.BF16:
            total += 2 * n
        if mode is None or mode is ValueMode.SIGN:
            # sign bits, then at most n zero-position gaps summing to < n: one byte each, plus
            # one more byte per 128 of gap for the few long ones.
            total += (n + 7) // 8 + n + n // 64 + 5
    return total


def decode_result(
    data: bytes | bytearray | memoryview,
    limits: DecodeLimits | None = None,
    expected: Layout | None = None,
    k: int | None = None,
    mode: ValueMode | None = None,
) -> DeMoResult:
    """Parses and validates a payload; raises ResultFormatError on anything unexpected.

    With `expected` (the model's layout; `k` and `mode` the run's), a payload larger than any
    result for that model is refused before parsing, and each record is checked against the
    model as soon as its header is read, before its arrays are touched: a peer cannot make
    this client decode (and allocate for) shapes its model does not have. Without it,
    allocation is still bounded by the payload length. Work is vectorised (no Python loop per
    coefficient) and temporaries stay within a small multiple of the decoded arrays, which
    are copies of the payload's bytes at their wire width (no 8-byte widening), so the
    payload buffer can be released.
    """
    lim = limits or DecodeLimits()
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ResultFormatError("payload must be bytes")
    view = memoryview(data).cast("B")
    if len(view) > lim.max_bytes:
        raise ResultFormatError(f"payload of {len(view)} bytes exceeds the {lim.max_bytes} limit")
    names = list(expected) if expected is not None else None
    if expected is not None:
        bound = result_size_bound(expected, k, mode)
        if len(view) > bound:
            raise ResultFormatError(
                f"payload of {len(view)} bytes exceeds the {bound} a result for this model can be"
            )
    r = _Reader(view)
    if bytes(r.take(4, "magic")) != MAGIC:
        raise ResultFormatError("not a DeMo result (bad magic)")
    version, mode_raw = r.unpack("<BB", "header")
    if version != VERSION:
        raise ResultFormatError(f"unsupported result version {version} (this client reads 1)")
    try:
        got_mode = ValueMode(mode_raw)
    except ValueError as e:
        raise ResultFormatError(f"unknown value mode {mode_raw}") from e
    if mode is not None and got_mode != mode:
        raise ResultFormatError(f"value mode {got_mode.name}, run uses {mode.name}")
    n_params = r.varint("parameter count")
    if n_params > lim.max_params:
        raise ResultFormatError(f"{n_params} parameters exceeds the {lim.max_params} limit")
    if names is not None and n_params != len(names):
        raise ResultFormatError(f"{n_params} parameters, the model has {len(names)}")
    out = DeMoResult(value_mode=got_mode)
    prev = b""
    for i in range(n_params):
        shared, suffix_len = r.unpack("<BB", "name header")
        if shared > len(prev):
            raise ResultFormatError(f"name shares {shared} bytes with a {len(prev)}-byte name")
        suffix = bytes(r.take(suffix_len, "name"))
        raw = prev[:shared] + suffix
        if not 0 < len(raw) <= MAX_NAME:
            raise ResultFormatError(f"parameter name length {len(raw)} out of range")
        if shared < 255 and shared < len(prev) and suffix[:1] == prev[shared : shared + 1]:
            raise ResultFormatError("name prefix is not the longest shared one (non-canonical)")
        prev = raw
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ResultFormatError("parameter name is not UTF-8") from e
        if name in out.params:
            raise ResultFormatError(f"{name}: duplicate parameter")
        if names is not None and name != names[i]:
            raise ResultFormatError(
                f"parameter {i} is {name!r}, the model's is {names[i]!r} (set or order differs)"
            )
        (ndim,) = r.unpack("<B", "ndim")
        if ndim > MAX_NDIM:
            raise ResultFormatError(f"{name}: {ndim} dimensions exceeds {MAX_NDIM}")
        shape = tuple(r.varint("shape") for _ in range(ndim))
        (cdim,) = r.unpack("<B", "chunk ndim")
        if cdim not in (1, 2):
            raise ResultFormatError(f"{name}: chunk must have 1 or 2 dimensions, not {cdim}")
        chunk = tuple(r.varint("chunk") for _ in range(cdim))
        if expected is not None:
            want_shape, want_chunk = expected[name]
            if shape != tuple(want_shape) or chunk != tuple(want_chunk):
                raise ResultFormatError(
                    f"{name}: shape/chunk {shape}/{chunk}, expected {want_shape}/{want_chunk}"
                )
        _check_shape(name, shape, chunk, lim)
        kk, n_zero = r.varint("k"), r.varint("zero count")
        cnumel = math.prod(chunk)
        if not 0 < kk <= cnumel:
            raise ResultFormatError(f"{name}: k={kk} outside 1..{cnumel}")
        if k is not None and kk != min(k, cnumel):
            raise ResultFormatError(f"{name}: k={kk}, run uses {k}")
        rows = num_chunks(shape, chunk)
        n = rows * kk
        idx = _decode_indices(r, name, rows, kk, cnumel)
        values = _decode_values(r, name, got_mode, n, n_zero).view(rows, kk)
        out.params[name] = ParamComponent(tuple(shape), tuple(chunk), idx, values)
    if r.pos != len(r.data):
        raise ResultFormatError(f"{len(r.data) - r.pos} trailing bytes after the last parameter")
    return out


_INDEX_NP = {1: np.uint8, 2: np.int16, 4: np.int32}
"""In-memory numpy type per wire width (the torch types of `index_dtype`)."""


def _decode_indices(r: _Reader, name: str, rows: int, k: int, cnumel: int) -> torch.Tensor:
    """(rows, k) indices at their wire width: range and order checked on the raw array, then
    one copy into the in-memory type (no widening to int64)."""
    width = _wire_width(index_dtype(cnumel))
    raw = np.frombuffer(r.take(rows * k * width, "indices"), dtype=f"<u{width}").reshape(rows, k)
    if int(raw.max()) >= min(cnumel, 1 << 31):
        raise ResultFormatError(f"{name}: index out of range for chunk of {cnumel}")
    if k > 1 and not bool((raw[:, 1:] > raw[:, :-1]).all()):
        raise ResultFormatError(f"{name}: indices not strictly increasing within a chunk")
    return torch.from_numpy(raw.astype(_INDEX_NP[width]))


def _decode_values(r: _Reader, name: str, mode: ValueMode, n: int, n_zero: int) -> torch.Tensor:
    if mode is not ValueMode.SIGN:
        if n_zero:
            raise ResultFormatError(f"{name}: zero list is only valid in 1-bit mode")
        if mode is ValueMode.FP32:
            f = np.frombuffer(r.take(4 * n, "values"), "<f4").astype(np.float32)
            if not bool(np.isfinite(f).all()):
                raise ResultFormatError(f"{name}: non-finite value")
            return torch.from_numpy(f)
        raw = np.frombuffer(r.take(2 * n, "values"), "<i2").astype(np.int16)
        if bool(((raw & 0x7F80) == 0x7F80).any()):  # exponent all ones: inf or nan
            raise ResultFormatError(f"{name}: non-finite value")
        return torch.from_numpy(raw).view(torch.bfloat16)
    if n_zero > n:
        raise ResultFormatError(f"{name}: {n_zero} zeros among {n} values")
    nbytes = (n + 7) // 8
    bits = np.unpackbits(np.frombuffer(r.take(nbytes, "sign bits"), np.uint8), bitorder="little")
    if bits[n:].any():
        raise ResultFormatError(f"{name}: padding bits of the sign array are set")
    signs = bits[:n].view(np.int8)  # 1 = negative; turned into -1/+1 in place
    np.multiply(signs, -2, out=signs)
    np.add(signs, 1, out=signs)
    prev = -1
    left = n_zero
    while left:
        block = min(left, ZERO_BLOCK)
        gaps = _varint_block(r, block, "zero position")
        pos = np.cumsum(gaps + 1) + prev
        prev = int(pos[-1])
        if prev >= n:
            raise ResultFormatError(f"{name}: zero positions out of range")
        if bool((signs[pos] < 0).any()):
            raise ResultFormatError(f"{name}: a zero value has its sign bit set")
        signs[pos] = 0
        left -= block
    return torch.from_numpy(signs)


def _varint_block(r: _Reader, count: int, what: str) -> np.ndarray:
    """The next `count` shortest-form u32 varints as int64, decoded with array operations."""
    window = np.frombuffer(r.data[r.pos : r.pos + 5 * count], np.uint8)
    ends = np.flatnonzero(window < 0x80)[:count]
    lens = np.diff(ends, prepend=-1)
    if lens.size and int(lens.max()) > 5:
        raise ResultFormatError(f"{what}: varint longer than 5 bytes")
    if ends.size < count:
        tail = window.size - (int(ends[-1]) + 1 if ends.size else 0)
        if tail >= 5:
            raise ResultFormatError(f"{what}: varint longer than 5 bytes")
        raise ResultFormatError(
            f"truncated payload: {what} needs {count} varints at offset {r.pos}, "
            f"{ends.size} present"
        )
    longest = int(lens.max())
    if longest == 1:
        vals = window[:count].astype(np.int64)
    else:
        if bool(((lens > 1) & (window[ends] == 0)).any()):
            raise ResultFormatError(f"{what}: varint not in shortest form")
        starts = ends - lens + 1
        vals = np.zeros(count, np.int64)
        for j in range(longest):
            sel = lens > j
            vals[sel] += (window[starts[sel] + j].astype(np.int64) & 0x7F) << (7 * j)
        if int(vals.max()) >= 1 << 32:
            raise ResultFormatError(f"{what}: varint exceeds u32")
    r.pos += int(ends[-1]) + 1
    return vals


def check_matches(
    result: DeMoResult,
    expected: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]],
    k: int | None = None,
    mode: ValueMode | None = None,
) -> None:
    """Raises ResultFormatError unless the result covers exactly the expected parameters, in
    order, with the expected shapes and chunking (and k / value mode when given).

    Applying a result allocates dense (num_chunks, chunk numel) buffers, so this check against
    the local model is what bounds memory for a peer's payload.
    """
    if mode is not None and result.value_mode != mode:
        raise ResultFormatError(f"value mode {result.value_mode.name}, run uses {mode.name}")
    if list(result.params) != list(expected):
        missing = [n for n in expected if n not in result.params][:3]
        extra = [n for n in result.params if n not in expected][:3]
        raise ResultFormatError(
            f"parameter set differs from the model (missing {missing}, unexpected {extra}, "
            "or different order)"
        )
    for name, (shape, chunk) in expected.items():
        comp = result.params[name]
        if comp.shape != tuple(shape) or comp.chunk != tuple(chunk):
            raise ResultFormatError(
                f"{name}: shape/chunk {comp.shape}/{comp.chunk}, expected {shape}/{chunk}"
            )
        if k is not None and comp.k != min(k, math.prod(chunk)):
            raise ResultFormatError(f"{name}: k={comp.k}, run uses {k}")


def commitment_hasher(
    run_id: bytes, step: int, batch_id: int, size: int, domain: bytes = b""
) -> Any:
    """The SHA-256 state of a commitment before its `size` payload bytes: the one preimage
    layout, shared by `commitment` and the p2p layer's streaming check.

    domain ‖ u32le(len(run_id)) ‖ run_id ‖ u64le(step) ‖ u64le(batch_id) ‖ u64le(size). Results
    have no domain; other payload kinds (momentum disclosures) add a prefix of their own, so no
    payload can stand for two kinds under one commitment. Length prefixes make the encoding
    injective (no (run_id, payload) pair can be re-split into another); fixed-width integers make
    step/batch unambiguous.
    """
    if not 0 <= step < 1 << 64 or not 0 <= batch_id < 1 << 64:
        raise ValueError("step and batch_id must fit in u64")
    if len(run_id) >= 1 << 32:
        raise ValueError("run_id too long")
    h = hashlib.sha256()
    h.update(domain)
    h.update(struct.pack("<I", len(run_id)))
    h.update(run_id)
    h.update(struct.pack("<QQQ", step, batch_id, size))
    return h


def commitment(
    run_id: bytes, step: int, batch_id: int, payload: bytes, domain: bytes = b""
) -> bytes:
    """SHA-256 over `commitment_hasher`'s preimage ‖ payload. Clients sign this digest with
    their node key."""
    h = commitment_hasher(run_id, step, batch_id, len(payload), domain)
    h.update(payload)
    return h.digest()
