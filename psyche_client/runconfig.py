"""Run configs from user input: `--set name=integer` pairs and field maps, checked once here.

`serve --set`, the operator's `run create/update --set` and the TCP server's `update_config`
message all build a core `Config` through these functions, so they accept the same fields and
report the same mistakes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from psyche_client.errors import UserError

if TYPE_CHECKING:
    from psyche_client import _core


class ConfigError(UserError):
    """A config the core would not take; `name` is the core-style error name for the wire."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def parse_sets(pairs: Iterable[str]) -> dict[str, int]:
    """`name=integer` pairs (the `--set` option) as a field map."""
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise ConfigError(
                "InvalidMessage", f"--set {pair!r}: expected name=integer (e.g. min_clients=3)"
            )
        out[name.strip()] = int(value)
    return out


def config_with(fields: Mapping[str, Any], base: _core.Config | None = None) -> _core.Config:
    """The default config (or `base`) with `fields` replaced; not yet validated."""
    from psyche_client import _core

    if not all(isinstance(v, int) and not isinstance(v, bool) for v in fields.values()):
        raise ConfigError("InvalidMessage", "config must map field names to integers")
    try:
        return _core.Config(**fields) if base is None else base.replace(**fields)
    except TypeError as e:
        known = ", ".join(_core.Config().to_dict())
        raise ConfigError(
            "InvalidMessage", f"unknown config field ({e}); known fields: {known}"
        ) from None
    except OverflowError:
        bad = [f"{k}={v}" for k, v in fields.items() if not _fits(k, v)]
        raise ConfigError(
            "InvalidMessage", f"config value out of range: {', '.join(bad) or 'one of them'}"
        ) from None


def _fits(name: str, value: int) -> bool:
    from psyche_client import _core

    try:
        _core.Config(**{name: value})
    except OverflowError:
        return False
    except TypeError:
        pass
    return True


def checked(config: _core.Config) -> _core.Config:
    """`config` if the core accepts it for a run, else a `ConfigError` naming the rule."""
    from psyche_client import _core

    try:
        config.validate()
    except _core.CoordinatorError as e:
        raise ConfigError(e.name, f"invalid run config: {e.name}: {e}") from None
    return config


def config_from_sets(pairs: Iterable[str], base: _core.Config | None = None) -> _core.Config:
    """A validated config from `--set` pairs over the default (or `base`)."""
    return checked(config_with(parse_sets(pairs), base))
