"""Push the Prometheus metrics elsewhere: OTLP (`--otlp-endpoint`) and wandb (`--wandb-project`).

There is one source of numbers, the collectors in `psyche_client.metrics`; each sink reads the
same samples, so every sink carries the same names (`psyche_<component>_<what>_<unit>`, checked
by `metrics.check_name`). A labelled sample keeps its labels as OTLP attributes; wandb, which
has no labels, gets `name/label=value` keys (`psyche_server_members_clients/state=Healthy`).

Both sinks import their packages only when asked for, so neither slows `--help` or a run that
does not use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psyche_client.errors import UserError

__all__ = ["Sample", "Sinks", "samples", "start_sinks"]


@dataclass(frozen=True)
class Sample:
    """One number: its scheme name, labels, value, and whether it only goes up (a counter)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    counter: bool

    def flat_name(self) -> str:
        """The wandb key: the name, then `/label=value` per label."""
        return self.name + "".join(f"/{k}={v}" for k, v in self.labels)


def samples(collector: Any) -> list[Sample]:
    """The collector's samples as Prometheus would expose them (counters as `…_total`)."""
    out: list[Sample] = []
    for family in collector.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = tuple(sorted(s.labels.items()))
            out.append(Sample(s.name, labels, float(s.value), family.type == "counter"))
    return out


class Sinks:
    """The started sinks; `close()` flushes and stops them (also run at interpreter exit)."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], None]] = []

    def close(self) -> None:
        while self.closers:
            closer = self.closers.pop()
            try:
                closer()
            except Exception:  # noqa: BLE001 - a sink that fails to flush must not mask the exit
                pass


def start_sinks(
    collector: Any,
    *,
    otlp_endpoint: str | None = None,
    wandb_project: str | None = None,
    service: str = "psyche-client",
    wandb_interval_s: float = 10.0,
) -> Sinks:
    """Start the sinks asked for over `collector` (a `metrics.ServerCollector` or
    `ClientCollector`); returns them for `close()`."""
    import atexit

    sinks = Sinks()
    try:
        if otlp_endpoint:
            from psyche_client.telemetry.otlp import start_otlp

            sinks.closers.append(start_otlp(collector, otlp_endpoint, service))
        if wandb_project:
            from psyche_client.telemetry.wandb_sink import start_wandb

            sinks.closers.append(start_wandb(collector, wandb_project, service, wandb_interval_s))
    except BaseException:
        sinks.close()
        raise
    atexit.register(sinks.close)
    return sinks


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


class SinkError(UserError, ValueError):
    """A sink flag is malformed, or its package is not installed."""
