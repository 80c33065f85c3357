"""Model references from every input form, turned into the core's fixed-size `ModelRef` here.

- the JSON form `{"kind", "location", "revision"}` that clients send to either coordinator (so
  the two backends accept exactly the same inputs);
- a kind name with location and revision (the operator's `--model-kind`, short names allowed);
- the `--model` argument of `serve`: a directory, an http(s) URL, a hub repo id, or `peers`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from psyche_client import _core
from psyche_client.errors import UserError

KINDS = ("LocalPath", "HttpUrl", "HuggingFace", "Peers")
SHORT_KINDS = {"hf": "HuggingFace", "http": "HttpUrl", "path": "LocalPath", "peers": "Peers"}
"""The operator's short kind names (`run create --model-kind hf`)."""
_HUB_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class ModelRefError(ValueError):
    """Not a model reference; `name` is the core-style error name to report."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def model_ref_of(kind: Any, location: str = "", revision: str = "") -> _core.ModelRef:
    """A core `ModelRef` of a kind (one of `KINDS`); `ModelRefError` if the core refuses it."""
    try:
        # For every kind but HuggingFace the revision is empty or the content hash.
        if kind == "LocalPath":
            return _core.ModelRef.local_path(location, revision)
        if kind == "HttpUrl":
            return _core.ModelRef.http_url(location, revision)
        if kind == "HuggingFace":
            return _core.ModelRef.hugging_face(location, revision)
        if kind == "Peers":
            return _core.ModelRef.peers(revision)
    except _core.CoordinatorError as e:
        raise ModelRefError(e.name, str(e)) from None
    raise ModelRefError("InvalidModelRef", f"unknown model kind {kind!r}; one of {KINDS}")


def model_ref_from_json(value: Any) -> _core.ModelRef:
    """A core `ModelRef` from its JSON form; `ModelRefError` for anything else."""
    if not isinstance(value, dict):
        raise ModelRefError("InvalidMessage", "model must be an object")
    kind, location = value.get("kind"), value.get("location", "")
    revision = value.get("revision", "")
    if not isinstance(location, str) or not isinstance(revision, str):
        raise ModelRefError("InvalidMessage", "model location and revision must be strings")
    return model_ref_of(kind, location, revision)


def model_ref_from_kind(kind: str, location: str, revision: str) -> _core.ModelRef:
    """The operator's `--model-kind/--model-location/--model-revision`; `UserError` if bad."""
    if kind not in SHORT_KINDS:
        raise UserError(f"--model-kind must be one of {', '.join(SHORT_KINDS)}")
    try:
        return model_ref_of(SHORT_KINDS[kind], location, revision)
    except ModelRefError as e:
        raise UserError(f"model: {e.name}") from None


def parse_model_arg(model: str) -> _core.ModelRef:
    """The `--model` of `serve`: a directory, http(s) URL, `org/repo[@revision]`, or `peers`."""
    path = Path(model)
    try:
        if model == "peers":
            return model_ref_of("Peers")
        if model.startswith(("http://", "https://")):
            return model_ref_of("HttpUrl", model)
        if path.is_dir():
            return model_ref_of("LocalPath", str(path.resolve()))
        repo, _, revision = model.partition("@")
        if not path.exists() and _HUB_REPO.fullmatch(repo):
            return model_ref_of("HuggingFace", repo, revision)
    except ModelRefError as e:
        raise UserError(f"--model {model!r}: {e}") from None
    raise UserError(f"--model {model!r}: not a directory, URL, hub repo id, or 'peers'")
