"""Errors that mean "the user gave bad input", shown as one line instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file, unknown run); the message says how."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every exception type that reports bad user input, from each part of the package.

    Imported here (not at module load) so the CLI's `--help` does not import torch or libp2p.
    """
    from psyche_client.backend.tcp import AddressError
    from psyche_client.checkpoint.io import CheckpointError
    from psyche_client.client import ClientDesynced, ClientEjected
    from psyche_client.data.provider import DataError
    from psyche_client.identity import KeyFileError
    from psyche_client.server.persist import StateFileError

    return (
        UserError,
        KeyFileError,
        AddressError,
        StateFileError,
        DataError,
        CheckpointError,
        ClientEjected,
        ClientDesynced,
    )
