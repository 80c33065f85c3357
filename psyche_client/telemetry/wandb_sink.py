"""wandb logging (`--wandb-project NAME`): the collector's samples, every `interval_s`, from a
daemon thread, under the same names as Prometheus and OTLP (labels folded into the key).

wandb's own settings apply (`WANDB_MODE=offline` writes the run under `WANDB_DIR` without an
account, `WANDB_ENTITY`, `WANDB_API_KEY`, …). NaN samples (a loss before the first batch) are
left out rather than logged as gaps. Importing wandb takes about a second, so it happens only
here, when the flag is given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from psyche_client.telemetry import SinkError, finite, samples


def snapshot(collector: Any) -> dict[str, float]:
    """One wandb row: every finite sample by its flat name."""
    return {s.flat_name(): s.value for s in samples(collector) if finite(s.value)}


def start_wandb(
    collector: Any, project: str, service: str, interval_s: float
) -> Callable[[], None]:
    """Start a wandb run and the logging thread; returns the function that logs a last row
    and finishes the run."""
    try:
        import wandb
    except ImportError:
        raise SinkError("--wandb-project needs the wandb package: pip install wandb") from None
    try:
        run = wandb.init(
            project=project,
            job_type=service,
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
    except Exception as e:  # noqa: BLE001 - wandb's login/network errors come in many types
        raise SinkError(f"wandb could not start a run in project {project!r}: {e}") from None
    # Plot against the run's step, not wandb's row counter (rows come every interval_s).
    step_metric = service.replace("-", "_") + "_run_steps"
    if step_metric in ("psyche_server_run_steps", "psyche_client_run_steps"):
        run.define_metric(step_metric)
        run.define_metric("*", step_metric=step_metric)
    stop = threading.Event()
    lock = threading.Lock()

    def log_once() -> None:
        with lock:
            run.log(snapshot(collector))

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                log_once()
            except Exception:  # noqa: BLE001 - a failed row must not end the logging
                continue

    thread = threading.Thread(target=loop, name="psyche-wandb", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(timeout=interval_s + 5)
        try:
            log_once()
        finally:
            run.finish()

    return close
