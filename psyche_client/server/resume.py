"""Restarting `serve` on a saved run: settings given on the command line are never ignored.

A saved state carries its own config and model. When the operator restarts with `--set` or
`--model` values that differ from the saved ones, silently resuming with the old values (what the
server once did) hides a mistake; silently applying them could surprise a running epoch. So the
restart either fails, naming each differing field, or, with an explicit `--reconfigure`, applies
them the way an operator would by hand: pause (a running epoch is aborted and its data
requeued), update, resume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psyche_client.errors import UserError
from psyche_client.runconfig import config_with, parse_sets

if TYPE_CHECKING:
    from psyche_client import _core


class SettingsChanged(UserError):
    """A restart asked for settings that differ from the saved run's."""


def _model_key(model: _core.ModelRef) -> tuple[str, str, str]:
    return (model.kind.name, model.location, model.revision)


def _model_text(model: _core.ModelRef) -> str:
    return ":".join(p for p in _model_key(model) if p)


def changed_settings(
    saved: _core.Coordinator, sets: list[str], model: _core.ModelRef | None
) -> dict[str, tuple[str, str]]:
    """Field -> (saved value, asked value) for each setting given that differs."""
    asked = parse_sets(sets)
    config = config_with(asked, saved.config).to_dict()
    before = saved.config.to_dict()
    out = {k: (str(before[k]), str(config[k])) for k in asked if before.get(k) != config[k]}
    if model is not None and _model_key(model) != _model_key(saved.model):
        out["model"] = (_model_text(saved.model), _model_text(model))
    return out


def reconcile(
    saved: _core.Coordinator,
    sets: list[str],
    model: _core.ModelRef | None,
    reconfigure: bool,
    now: int,
) -> list[str]:
    """Check (or, with `reconfigure`, apply) the settings of a restart; the applied changes."""
    from psyche_client import _core
    from psyche_client.runconfig import checked

    changes = changed_settings(saved, sets, model)
    if not changes:
        return []
    listed = ", ".join(f"{k} (saved {a}, given {b})" for k, (a, b) in changes.items())
    if not reconfigure:
        raise SettingsChanged(
            f"the saved run has other settings: {listed}; pass --reconfigure to apply them "
            "(pauses the run, aborting a running epoch), or drop those options to resume as saved"
        )
    config = checked(config_with(parse_sets(sets), saved.config))
    was_paused = saved.paused
    try:
        if not was_paused:
            saved.pause(now)
        saved.update_config(config, now)
        if model is not None and "model" in changes:
            saved.update_model(model, now)
        if not was_paused:
            saved.resume(now)
    except _core.CoordinatorError as e:
        raise SettingsChanged(f"cannot apply {listed}: {e.name}: {e}") from None
    return [f"{k}={b}" for k, (_, b) in changes.items()]
