"""The JSON form of a model reference, {"kind", "location", "revision"}, shared by the backends.

Clients send checkpoint references in this form to either coordinator; both turn it into the
core's fixed-size `ModelRef` here, so the two backends accept exactly the same inputs.
"""

from __future__ import annotations

from typing import Any

from psyche_client import _core

KINDS = ("LocalPath", "HttpUrl", "HuggingFace", "Peers")


class ModelRefError(ValueError):
    """The JSON is not a model reference; `name` is the core-style error name to report."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def model_ref_from_json(value: Any) -> _core.ModelRef:
    """A core `ModelRef` from its JSON form; `ModelRefError` for anything else."""
    if not isinstance(value, dict):
        raise ModelRefError("InvalidMessage", "model must be an object")
    kind, location = value.get("kind"), value.get("location", "")
    revision = value.get("revision", "")
    if not isinstance(location, str) or not isinstance(revision, str):
        raise ModelRefError("InvalidMessage", "model location and revision must be strings")
    try:
        if kind == "LocalPath":
            return _core.ModelRef.local_path(location)
        if kind == "HttpUrl":
            return _core.ModelRef.http_url(location)
        if kind == "HuggingFace":
            return _core.ModelRef.hugging_face(location, revision)
        if kind == "Peers":
            return _core.ModelRef.peers()
    except _core.CoordinatorError as e:
        raise ModelRefError(e.name, str(e)) from None
    raise ModelRefError("InvalidModelRef", f"unknown model kind {kind!r}; one of {KINDS}")
