"""The training settings every client of a run must share, stored beside the model.

The core state fixes who trains which samples and which results apply; the shape of a result
(DeMo chunking, top-k, value mode, step size) and the sample length must also match on every
client, or results would not decode or would apply differently. They travel with the model as
`psyche.json` next to `config.json`, so a client that has the model has them too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from psyche_client.errors import UserError
from psyche_client.training.optimizer import DeMoConfig
from psyche_client.training.result import ValueMode

SPEC_NAME = "psyche.json"


@dataclass(frozen=True)
class TrainingSpec:
    """Shared training settings (see module docstring)."""

    seq_len: int = 64
    demo: DeMoConfig = field(default_factory=DeMoConfig)
    micro_batch: int | None = None

    def to_json(self) -> dict[str, Any]:
        demo = asdict(self.demo)
        demo["value_mode"] = self.demo.value_mode.name
        return {"seq_len": self.seq_len, "micro_batch": self.micro_batch, "demo": demo}

    @classmethod
    def from_json(cls, data: Any, where: str = "training spec") -> TrainingSpec:
        try:
            demo = dict(data["demo"])
            demo["value_mode"] = ValueMode[demo["value_mode"]]
            return cls(int(data["seq_len"]), DeMoConfig(**demo), data.get("micro_batch"))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where} is not a valid psyche.json ({e!r})") from None


def save_spec(spec: TrainingSpec, directory: str | Path) -> Path:
    """Write `psyche.json` into a model directory."""
    path = Path(directory) / SPEC_NAME
    path.write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    return path


def load_spec(directory: str | Path) -> TrainingSpec:
    """Read `psyche.json` from a model directory, with a clear error when missing or bad."""
    path = Path(directory) / SPEC_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing: the model directory has no training spec") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not JSON ({e})") from None
    return TrainingSpec.from_json(data, str(path))
