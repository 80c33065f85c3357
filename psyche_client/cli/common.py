"""Helpers every command group shares."""

from __future__ import annotations

import logging


def setup_logging(verbose: bool) -> None:
    """INFO logs with `--verbose`, warnings only otherwise."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
