"""Data providers: sample index → seq_len + 1 tokens, from local files, HTTP or a TCP server."""

from psyche_client.data.corpus import generate_text, make_corpus, tokenize_bytes
from psyche_client.data.http import HttpTokenProvider
from psyche_client.data.local import LocalTokenProvider
from psyche_client.data.provider import DataError, SampleIndex, TokenDataProvider
from psyche_client.data.tcp import TcpDataProvider, serve_data

__all__ = [
    "DataError",
    "HttpTokenProvider",
    "LocalTokenProvider",
    "SampleIndex",
    "TcpDataProvider",
    "TokenDataProvider",
    "generate_text",
    "make_corpus",
    "serve_data",
    "tokenize_bytes",
]
