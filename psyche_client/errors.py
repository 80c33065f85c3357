"""The package's one error family for bad user input, shown as one line instead of a traceback.

Every input-error type of the package (key files, addresses, state files, data, checkpoints, a
client ejected from or out of step with its run, run configs) subclasses `UserError`, so the
CLI catches `UserError` alone. This module imports nothing from the package (no import cycles).
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad option, missing file, unknown run); the message says how."""
