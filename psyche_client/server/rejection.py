"""The one refusal type of the TCP server: a message the run does not take, with a core-style name.

Its own module so that the server's parts (the app, the core host, the peer directory, join
control) can raise it without importing each other.
"""

from __future__ import annotations


class CoreRejection(Exception):
    """The core refused a message (wrong phase, unknown client, ...): `name` is its error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
