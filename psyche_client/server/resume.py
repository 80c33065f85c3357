"""Restarting `serve` on a saved run: settings given on the command line are never ignored.

A saved state carries its own config and model. When the operator restarts with `--set` values
that differ from the saved ones, silently resuming with the old values (what the server once did)
hides a mistake; silently applying them could surprise a running epoch. So the restart either
fails, naming each differing field, or, with an explicit `--reconfigure`, applies them the way an
operator would by hand: pause (a running epoch is aborted and its data requeued), update, resume.

`--model` names the *initial* model, and a run's model moves on at every checkpoint, so a
different `--model` on a resumed run is normal (scripts pass the same command line each time):
it is not applied, and the restart says so in one line, unless `--reconfigure` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


def changed_settings(saved: _core.Coordinator, sets: list[str]) -> dict[str, tuple[str, str]]:
    """Config field -> (saved value, asked value) for each `--set` that differs."""
    asked = parse_sets(sets)
    config = config_with(asked, saved.config).to_dict()
    before = saved.config.to_dict()
    return {k: (str(before[k]), str(config[k])) for k in asked if before.get(k) != config[k]}


@dataclass
class Reconciled:
    """What a restart did with the settings it was given."""

    applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def reconcile(
    saved: _core.Coordinator,
    sets: list[str],
    model: _core.ModelRef | None,
    reconfigure: bool,
    now: int,
) -> Reconciled:
    """Check (or, with `reconfigure`, apply) the settings of a restart."""
    from psyche_client import _core
    from psyche_client.runconfig import checked

    out = Reconciled()
    changes = changed_settings(saved, sets)
    new_model = model is not None and _model_key(model) != _model_key(saved.model)
    if new_model and not reconfigure:
        assert model is not None
        out.notes.append(
            f"--model {_model_text(model)} not applied: the saved run's model is "
            f"{_model_text(saved.model)} (pass --reconfigure to replace it)"
        )
    if not changes and not (new_model and reconfigure):
        return out
    listed = ", ".join(f"{k} (saved {a}, given {b})" for k, (a, b) in changes.items())
    if changes and not reconfigure:
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
        if new_model:
            assert model is not None
            saved.update_model(model, now)
        if not was_paused:
            saved.resume(now)
    except _core.CoordinatorError as e:
        raise SettingsChanged(f"cannot apply the new settings: {e.name}: {e}") from None
    out.applied = [f"{k}={b}" for k, (_, b) in changes.items()]
    if new_model:
        assert model is not None
        out.applied.append(f"model={_model_text(model)}")
    return out
