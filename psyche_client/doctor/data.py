"""Can this client read its `--data`, and was it tokenized for the run's model?

The same sources `join` takes, opened the same way (`cli.data.check_data_sources`, then the
provider `join` would build), so a failure here is the failure `join` would hit. Vocabulary:
a prepared directory's manifest names its tokenizer's size, which must not exceed the model's
`vocab_size`; flat files say nothing, so a few samples spread over the data are read and
their largest id compared instead. A tcp:// data server only serves members of the current
epoch, so before joining doctor can only see that it answers as one.
"""

from __future__ import annotations

from psyche_client.doctor.model import ModelFacts
from psyche_client.doctor.report import Check, fail, ok, warn
from psyche_client.identity import NodeKey

SAMPLES = 32
"""Samples read for the vocabulary check (spread evenly; a few KiB each)."""


def _open(sources: list[str], seq_len: int, key: NodeKey, timeout_s: float) -> object:
    if sources[0].startswith("tcp://"):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from psyche_client.backend.tcp import parse_address
        from psyche_client.data.tcp import TcpDataProvider

        host, port = parse_address(sources[0])
        private = Ed25519PrivateKey.from_private_bytes(key.seed)
        return TcpDataProvider(host, port, private, timeout_s=timeout_s)
    if sources[0].startswith(("http://", "https://")):
        from psyche_client.data.http import HttpTokenProvider

        return HttpTokenProvider(sources, seq_len, timeout_s=timeout_s, retries=1)
    from psyche_client.data.mixture import open_sources

    return open_sources(sources, seq_len)


def data_checks(
    sources: list[str], facts: ModelFacts | None, key: NodeKey, timeout_s: float
) -> list[Check]:
    """Open the sources, then compare their vocabulary with the model's."""
    from psyche_client.cli.data import check_data_sources
    from psyche_client.data.provider import TokenDataProvider
    from psyche_client.errors import UserError

    if not sources:
        return [warn("data", "no --data given: not checked", "pass the --data you will join with")]
    seq_len = facts.seq_len if facts is not None else 64
    try:
        check_data_sources(sources)
        provider = _open(sources, seq_len, key, timeout_s)
    except UserError as e:
        message = str(e)
        if "not authorised" in message:
            return [
                ok("data", f"{sources[0]} answers as a Psyche data server"),
                warn(
                    "vocab",
                    "not checked: the data server serves members of the current epoch only",
                    "none needed: join checks the vocabulary once admitted",
                ),
            ]
        return [fail("data", message, "pass --data sources that exist and are readable")]
    except Exception as e:  # noqa: BLE001 - a transport or format error: name it, one line
        return [fail("data", f"{sources[0]}: {e!r}", "check the --data sources")]
    assert isinstance(provider, TokenDataProvider)
    try:
        n = len(provider)
        what = (
            ", ".join(sources) if len(sources) <= 2 else f"{sources[0]} and {len(sources) - 1} more"
        )
        checks = [ok("data", f"{what}: {n:,} samples of {provider.seq_len} tokens")]
        if provider.seq_len != seq_len:
            checks[0] = fail(
                "data",
                f"{what} serves {provider.seq_len}-token samples, the run trains on {seq_len}",
                "serve the data with the run's --seq-len",
            )
        checks.append(_vocab_check(provider, n, facts))
        return checks
    finally:
        provider.close()


def _vocab_check(provider: object, n: int, facts: ModelFacts | None) -> Check:
    from psyche_client.data.provider import TokenDataProvider

    assert isinstance(provider, TokenDataProvider)
    model_vocab = facts.vocab_size if facts is not None else None
    if model_vocab is None:
        return warn("vocab", "not checked: the model's vocab_size is unknown", "see `model` above")
    hint = "prepare the data with the run's tokenizer (`psyche-client data prepare`)"
    if provider.vocab_size is not None and provider.vocab_size > model_vocab:
        return fail(
            "vocab",
            f"the data was tokenized with a vocabulary of {provider.vocab_size}, "
            f"the model has vocab_size {model_vocab}",
            hint,
        )
    step = max(1, n // SAMPLES)
    try:
        top = max(int(provider.get(i).max()) for i in range(0, n, step)) if n else -1
    except Exception as e:  # noqa: BLE001 - a read failure mid-file: name it
        return fail("vocab", f"reading samples failed: {e}", "check the --data files")
    if top >= model_vocab:
        return fail(
            "vocab", f"the data holds token id {top}, the model's vocab_size is {model_vocab}", hint
        )
    known = f"tokenizer vocabulary {provider.vocab_size}, " if provider.vocab_size else ""
    return ok("vocab", f"{known}largest id in {min(n, SAMPLES)} samples {top} < {model_vocab}")
