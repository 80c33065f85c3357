"""Weighted mixtures: the same sample for the same index on every client (pinned values guard
the mapping across versions), proportions that follow the weights, every sample reached."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from psyche_client.cli.data import check_data_sources, open_data
from psyche_client.data import DataError, LocalTokenProvider
from psyche_client.data.mixture import (
    FeistelPermutation,
    MixtureProvider,
    integer_weights,
    open_sources,
    parse_sources,
)
from psyche_client.data.prepare import prepare
from psyche_client.data.provider import TokenDataProvider

if TYPE_CHECKING:
    from tests.data.conftest import Corpus


class Tagged(TokenDataProvider):
    """Sample i of dataset `tag` is [tag·1000 + i] * (seq_len + 1): the tokens name the source."""

    def __init__(self, n: int, tag: int, seq_len: int = 4, vocab: int | None = None) -> None:
        self.n, self.tag, self.seq_len, self.vocab_size = n, tag, seq_len, vocab

    def __len__(self) -> int:
        return self.n

    def get(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n:
            raise DataError("out of range")
        return np.full(self.seq_len + 1, self.tag * 1000 + index, dtype=np.int64)


def _mix(
    sizes: list[int], weights: list[int], seed: int = 0, shuffle: bool = True
) -> MixtureProvider:
    return MixtureProvider([Tagged(n, d) for d, n in enumerate(sizes)], weights, seed, shuffle)


def test_two_instances_give_identical_samples_and_the_mapping_is_pinned() -> None:
    a, b = _mix([50, 20], [3, 1], seed=7), _mix([50, 20], [3, 1], seed=7)
    assert len(a) == 80  # 4 slots per block × max(⌈50/3⌉, ⌈20/1⌉) blocks
    assert all(np.array_equal(a.get(i), b.get(i)) for i in range(len(a)))
    assert np.array_equal(a.get_batch(range(10)).numpy(), b.get_batch(range(10)).numpy())
    # Integers and SHA-256 only: these values may never change (clients of different versions
    # would train different samples for the same assignment).
    assert [a.locate(i) for i in range(8)] == [
        (0, 12), (1, 1), (0, 3), (0, 35), (0, 9), (1, 19), (0, 24), (0, 31)
    ]  # fmt: skip
    plain = _mix([50, 20], [3, 1], seed=7, shuffle=False)
    assert [plain.locate(i) for i in range(6)] == [(0, 0), (1, 0), (0, 1), (0, 2), (0, 3), (1, 1)]
    other = _mix([50, 20], [3, 1], seed=8)
    assert [other.locate(i) for i in range(20)] != [a.locate(i) for i in range(20)]


def test_the_run_seeds_the_mixture_the_same_on_every_client() -> None:
    run_a, run_b = b"run-a".ljust(32, b"\0"), b"run-b".ljust(32, b"\0")
    first, second = _mix([50, 20], [3, 1], seed=7), _mix([50, 20], [3, 1], seed=7)
    a1, a2 = first.for_run(run_a), second.for_run(run_a)  # two clients of one run
    order = [a1.locate(i) for i in range(len(a1))]
    assert order == [a2.locate(i) for i in range(len(a2))]
    assert order != [first.locate(i) for i in range(len(first))]  # not the file's seed alone
    b = first.for_run(run_b)
    assert [b.locate(i) for i in range(len(b))] != order  # another run, another order
    assert len(a1) == len(first) and set(order) == {(0, i) for i in range(50)} | {
        (1, i) for i in range(20)
    }
    assert Counter(d for d, _ in order) == {0: 60, 1: 20}


def test_proportions_follow_the_weights_in_every_block() -> None:
    m = _mix([1000, 1000, 1000], [5, 3, 2], seed=1)
    assert m.block == 10
    for start in (0, 10, 370, 4990):
        window = Counter(m.locate(i)[0] for i in range(start, start + 10))
        assert window == {0: 5, 1: 3, 2: 2}
    total = Counter(m.locate(i)[0] for i in range(len(m)))
    assert total[0] / len(m) == pytest.approx(0.5) and total[2] / len(m) == pytest.approx(0.2)


def test_every_sample_is_reached_and_small_datasets_repeat() -> None:
    m = _mix([30, 7], [1, 1], seed=3)
    assert len(m) == 60
    seen = Counter(m.locate(i) for i in range(len(m)))
    assert {i for d, i in seen if d == 0} == set(range(30))
    assert {i for d, i in seen if d == 1} == set(range(7))
    assert max(c for (d, _), c in seen.items() if d == 0) == 1  # the large one: once each
    assert sum(c for (d, _), c in seen.items() if d == 1) == 30  # the small one: upsampled


def test_weights_reduce_to_small_integers() -> None:
    assert integer_weights([Fraction("0.75"), Fraction("0.25")]) == [3, 1]
    assert integer_weights([Fraction(2), Fraction(4), Fraction(6)]) == [1, 2, 3]
    assert integer_weights([Fraction(1, 3), Fraction(2, 3)]) == [1, 2]
    with pytest.raises(DataError, match="round them"):
        integer_weights([Fraction("0.30001"), Fraction("0.69999")])
    with pytest.raises(DataError, match="positive"):
        integer_weights([Fraction(0), Fraction(1)])


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_feistel_is_a_permutation(n: int) -> None:
    p = FeistelPermutation(n, b"key")
    assert sorted(p(i) for i in range(n)) == list(range(n))
    if n > 10:
        assert [p(i) for i in range(10)] != list(range(10))
        assert [p(i) for i in range(10)] != [FeistelPermutation(n, b"other")(i) for i in range(10)]


def test_mixture_errors() -> None:
    with pytest.raises(DataError, match="sample length"):
        MixtureProvider([Tagged(5, 0, seq_len=4), Tagged(5, 1, seq_len=8)], [1, 1])
    with pytest.raises(DataError, match="one weight per dataset"):
        MixtureProvider([Tagged(5, 0)], [1, 1])
    with pytest.raises(DataError, match="out of range"):
        _mix([5, 5], [1, 1]).get(10)
    assert _mix([5], [1]).vocab_size is None
    m = MixtureProvider([Tagged(5, 0, vocab=300), Tagged(5, 1, vocab=400)], [1, 1])
    assert m.vocab_size == 400
    with pytest.raises(DataError, match="vocabulary of 400"):
        m.require_vocab(300)


def test_data_sources_with_weights_and_a_mixture_file(
    corpus: Corpus, prepared: tuple[Path, object], tmp_path: Path
) -> None:
    big, _ = prepared
    small = tmp_path / "small"
    prepare([corpus.jsonl], corpus.tokenizer, small)
    sources = [f"{big}:3", f"{small}:1"]
    check_data_sources(sources)
    a, b = open_data(sources, 16, key=None), open_data(sources, 16, key=None)
    assert isinstance(a, MixtureProvider) and a.weights == [3, 1] and a.vocab_size == 400
    assert all(np.array_equal(a.get(i), b.get(i)) for i in range(0, len(a), 11))
    d, i = a.locate(5)
    assert np.array_equal(a.get(5), LocalTokenProvider([[big, small][d]], 16).get(i))

    spec = {
        "seed": 9,
        "datasets": [{"path": "../small", "weight": 1}, {"path": str(big), "weight": "2"}],
    }
    mix = tmp_path / "mixes" / "mix.json"
    mix.parent.mkdir()
    mix.write_text(json.dumps(spec))
    check_data_sources([str(mix)])
    c = open_data([str(mix)], 16, key=None)
    assert isinstance(c, MixtureProvider) and c.weights == [1, 2] and c.seed == 9
    assert open_sources([str(mix)], 16, seed=4).seed == 4  # a run-wide seed wins

    with pytest.raises(DataError, match="weight to every"):
        parse_sources([f"{big}:3", str(small)])
    with pytest.raises(DataError, match="must be positive"):
        parse_sources([f"{big}:0", f"{small}:1"])
    with pytest.raises(DataError, match="does not exist"):
        check_data_sources([f"{tmp_path / 'nope'}:1", f"{small}:1"])
    mix.write_text('{"datasets": [{"path": "x"}]}')
    with pytest.raises(DataError, match="a mixture file is"):
        check_data_sources([str(mix)])
    assert parse_sources([str(big)]) is None  # no weights: plain concatenation
