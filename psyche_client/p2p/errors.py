"""Errors the p2p layer raises to its caller."""

from __future__ import annotations


class P2PError(RuntimeError):
    """Misuse of the node (not started, already stopped) or a p2p operation that cannot be
    done at all (e.g. no peer serves the model)."""


class ModelUnavailable(P2PError):
    """No peer served a trusted model manifest."""
