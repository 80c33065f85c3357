"""Psyche client: SDK, CLI, TCP coordinator server and training client."""

__version__ = "0.1.0"
