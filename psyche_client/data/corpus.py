"""A small, learnable, byte-level corpus generated from a seed, for tests and the demo.

Real text needs downloads or a large file in the repo; a seeded probabilistic grammar gives text
with real structure (spelling, agreement, clauses, punctuation, quotes, paragraphs) and identical
bytes on every machine. Word choices follow Zipf-like frequencies over a few hundred words, so
the text has the entropy profile of simple prose (a small model's byte-level loss stays around
1–1.5 nats after a few hundred steps, as on real text, rather than collapsing to the grammar's
floor). Tokenization is byte-level: token id = byte value (vocab 256), stored as little-endian
u16 (or u32) like any other tokenized corpus.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from psyche_client.data.provider import token_dtype

_NAMES = (
    "Anna Ben Clara David Elena Frank Grace Henry Iris Jack Kate Leo Maria Nora Oscar Paul "
    "Rosa Sam Tara Victor Wendy Yusuf Zoe Hugo"
).split()
_ADJ = (
    "old young small large quiet bright dark warm cold green red blue golden silver tired happy "
    "clever gentle strange empty heavy narrow wide ancient curious careful brave lonely busy "
    "wooden sudden distant hidden broken simple proud patient hungry silent soft rough early "
    "late honest eager calm wild proper famous"
).split()
_NOUNS = (
    "cat dog bird horse river road house garden door window table letter book song boat tree "
    "field market town village teacher farmer sailor doctor child friend king queen soldier "
    "baker painter student mountain forest bridge lamp candle stone apple bread cup coat hat "
    "wall clock ship island storm morning evening winter summer voice story map key ring box "
    "bell cart mill well"
).split()
_VERBS = (
    "see like find carry paint follow remember feed watch open close build break read write "
    "sing hear call help visit leave bring take keep hold move push pull wash mend sell buy "
    "count draw fold hide lift miss need praise reach save send share thank touch trust warn"
).split()
_ADV = (
    "slowly quickly quietly carefully often never always gladly suddenly gently proudly "
    "nearly barely rarely softly boldly kindly simply eagerly calmly"
).split()
_PREP = "near behind under beside across through past inside above toward along beyond".split()
_TIME = (
    "in the morning|at night|every day|after the rain|before dinner|in winter|at dawn|"
    "on sunday|for an hour|once again|by noon|at last"
).split("|")
_CONJ = "and|but|while|because|so|although|until|when".split("|")
_NUM = "two three four five six seven eight nine ten twelve twenty".split()
_SAY = "said|asked|whispered|shouted|replied|cried".split("|")


def _zipf(rng: random.Random, words: list[str]) -> str:
    """A word with probability ∝ 1/(rank+1): a few are common, most are rare, as in prose."""
    cum = _CUM.setdefault(len(words), _cumulative(len(words)))
    return rng.choices(words, cum_weights=cum)[0]


def _cumulative(n: int) -> list[float]:
    out, total = [], 0.0
    for r in range(n):
        total += 1.0 / (r + 1)
        out.append(total)
    return out


_CUM: dict[int, list[float]] = {}


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun == "child":
        return "children"
    if noun.endswith("f"):
        return noun[:-1] + "ves"
    return noun + "s"


def _noun_phrase(rng: random.Random) -> tuple[str, bool]:
    """(phrase, is_plural)."""
    r = rng.random()
    if r < 0.2:
        return _zipf(rng, _NAMES), False
    adj = _zipf(rng, _ADJ) + " " if rng.random() < 0.5 else ""
    noun = _zipf(rng, _NOUNS)
    if r < 0.35:
        return f"{_zipf(rng, _NUM)} {adj}{_plural(noun)}", True
    det = rng.choice(["the", "the", "a", "my", "our", "that", "every"])
    if det == "a" and (adj or noun)[0] in "aeiou":
        det = "an"
    return f"{det} {adj}{noun}", False


def _clause(rng: random.Random) -> str:
    subj, plural = _noun_phrase(rng)
    verb = _zipf(rng, _VERBS)
    if rng.random() < 0.25:
        verb = rng.choice(["will", "could", "must", "did not"]) + " " + verb
    elif not plural:
        verb = _third_person(verb)
    parts = [subj, verb, _noun_phrase(rng)[0]]
    if rng.random() < 0.4:
        parts.append(f"{rng.choice(_PREP)} {_noun_phrase(rng)[0]}")
    if rng.random() < 0.25:
        parts.append(_zipf(rng, _ADV))
    if rng.random() < 0.25:
        parts.append(rng.choice(_TIME))
    return " ".join(parts)


def _sentence(rng: random.Random) -> str:
    text = _clause(rng)
    if rng.random() < 0.35:
        text += f"{',' if rng.random() < 0.5 else ''} {rng.choice(_CONJ)} {_clause(rng)}"
    text = text[0].upper() + text[1:]
    if rng.random() < 0.12:
        return f'"{text}," {rng.choice(_SAY)} {_zipf(rng, _NAMES)}.'
    return text + rng.choice([".", ".", ".", "!", "?"] if rng.random() < 0.9 else [";"])


def generate_text(n_bytes: int, seed: int = 0) -> str:
    """At least n_bytes of prose-like text from a fixed grammar (deterministic per seed)."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        s = _sentence(rng) + ("\n\n" if rng.random() < 0.15 else " ")
        parts.append(s)
        size += len(s)
    return "".join(parts)


def tokenize_bytes(text: str) -> np.ndarray:
    """Byte-level tokenization: UTF-8 bytes as token ids 0..255."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def make_corpus(
    path: str | os.PathLike[str],
    n_tokens: int = 200_000,
    seed: int = 0,
    n_files: int = 1,
    dtype: str = "u16",
) -> list[Path]:
    """Writes n_files flat token files (about n_tokens in total) into directory `path`.

    Returns the file paths in order; feed them to LocalTokenProvider or serve them over HTTP.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokens = tokenize_bytes(generate_text(n_tokens, seed))[:n_tokens]
    files = []
    for i, part in enumerate(np.array_split(tokens, n_files)):
        f = out / f"tokens_{i:03d}.{dtype}.bin"
        part.astype(token_dtype(dtype)).tofile(f)
        files.append(f)
    return files


def generate_documents(n_docs: int, doc_bytes: int = 400, seed: int = 0) -> list[str]:
    """n_docs short texts of the grammar above (about doc_bytes each), deterministic per seed."""
    text = generate_text(n_docs * doc_bytes, seed)
    return [text[i * doc_bytes : (i + 1) * doc_bytes].strip() for i in range(n_docs)]


def train_tokenizer(
    texts: list[str],
    path: str | os.PathLike[str],
    vocab_size: int = 512,
    eos: str = "<|endoftext|>",
) -> Path:
    """Train a byte-level BPE tokenizer on `texts` locally and save it as a tokenizer.json.

    Tests and demos need a real HF `tokenizers` tokenizer without downloads; a few hundred
    merges on the generated prose take well under a second. `eos` is its only special token
    (id 0), the document separator `data prepare` finds by name. `path` is a file or a
    directory (tokenizer.json inside, with a tokenizer_config.json naming the EOS).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[eos],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(path)
    if out.suffix != ".json":
        out.mkdir(parents=True, exist_ok=True)
        (out / "tokenizer_config.json").write_text(f'{{"eos_token": "{eos}"}}\n')
        out = out / "tokenizer.json"
    tok.save(str(out))
    return out


def make_prepared_corpus(
    directory: str | os.PathLike[str],
    n_docs: int = 400,
    vocab_size: int = 512,
    seed: int = 0,
    seq_len: int | None = None,
    dtype: str | None = "u32",
) -> tuple[Path, Path]:
    """A BPE tokenizer trained on generated documents, and those documents prepared with it, as
    a real run would have them: returns (tokenizer directory, prepared data directory).

    u32 by default, so a tiny model exercises the Llama-3-sized token path end to end. The
    documents go through a jsonl file and `data prepare` itself (the same code as the CLI).
    """
    import json

    from psyche_client.data.prepare import prepare

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    docs = generate_documents(n_docs, seed=seed)
    tok_dir = train_tokenizer(docs, root / "tokenizer", vocab_size=vocab_size).parent
    jsonl = root / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = root / "data"
    prepare([jsonl], tok_dir, out, seq_len=seq_len, dtype=dtype, overwrite=True)
    return tok_dir, out
