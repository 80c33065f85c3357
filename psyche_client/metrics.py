"""Prometheus metrics for the coordinator server and the client (opt-in: `--metrics-port`).

One naming scheme, checked by `check_name` for every metric this module exports:

    psyche_<component>_<what>_<unit>[_total]

- `component`: `server` (the TCP coordinator) or `client` (one participant);
- `what`: a snake_case noun phrase (`run`, `members`, `applied`, `received`, …);
- `unit`: the plural base unit: `seconds`, `bytes`, `steps`, `epochs`, `rounds`, `clients`,
  `connections`, `peers`, `samples`, `nats` (a cross-entropy loss), `tokens_per_second`, or
  `info` (value 1, the facts are labels) and `bool` (0 or 1);
- counters end in `_total` after the unit (`psyche_client_sent_bytes_total`).

Values are read when Prometheus scrapes (custom collectors over the server's core state and
the client's `ClientStatus`), so nothing on the training or consensus path records anything,
and a scrape never blocks either: it reads fields that the event loop writes whole.
The HTTP endpoint is prometheus_client's own (a daemon thread, GET only, nothing but these
numbers). A bare port binds 127.0.0.1; give HOST:PORT (e.g. 0.0.0.0:9100) to let another
machine scrape.

The same collectors feed the push sinks (`psyche_client.telemetry`: OTLP and wandb), so every
sink carries these names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from psyche_client.errors import UserError

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - only without the optional package
    raise UserError(
        "--metrics-port needs the prometheus_client package: pip install prometheus-client"
    ) from None

UNITS = (
    "seconds",
    "bytes",
    "steps",
    "epochs",
    "rounds",
    "clients",
    "connections",
    "peers",
    "samples",
    "nats",
    "tokens_per_second",
    "info",
    "bool",
)
NAME = re.compile(
    r"^psyche_(server|client)_[a-z][a-z0-9]*(_[a-z][a-z0-9]*)*_(" + "|".join(UNITS) + r")(_total)?$"
)
PHASES = (
    "Uninitialized",
    "WaitingForMembers",
    "Warmup",
    "RoundTrain",
    "RoundWitness",
    "Cooldown",
    "Paused",
    "Finished",
)
CLIENT_STATES = ("Pending", "Healthy", "Dropped", "Withdrawn", "Ejected")


class MetricsAddressError(UserError, ValueError):
    """`--metrics-port` is not PORT or HOST:PORT, or cannot be bound."""


def check_name(name: str) -> str:
    """`name` if it follows the scheme (see the module docstring), else ValueError."""
    if not NAME.match(name):
        raise ValueError(f"metric name {name!r} does not follow psyche_<component>_<what>_<unit>")
    return name


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    g = GaugeMetricFamily(check_name(name), doc, labels=list(labels or {}))
    g.add_metric(list((labels or {}).values()), value)
    return g


def _counter(name: str, doc: str, value: float) -> Metric:
    # prometheus_client appends `_total` to counter samples; the family name omits it.
    check_name(name)
    return CounterMetricFamily(name.removesuffix("_total"), doc, value=value)


def _phase_info(name: str, phase: str) -> Metric:
    g = GaugeMetricFamily(check_name(name), "1 for the current phase", labels=["phase"])
    for p in PHASES:
        g.add_metric([p], 1.0 if p == phase else 0.0)
    return g


class ServerCollector(Collector):
    """The coordinator's run as numbers: read from the core state on each scrape."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterable[Metric]:
        from psyche_client import _core
        from psyche_client.sdk.history import record_of

        host = self.server.core
        # The bytes the server last committed: an immutable object the event loop swaps whole,
        # so this thread never touches the core object the loop is mutating.
        raw = getattr(self.server, "_last_state", b"") or host.state_bytes()
        state = _core.Coordinator.from_bytes(raw)
        yield _phase_info("psyche_server_phase_info", state.phase.name)
        yield _gauge("psyche_server_run_epochs", "current epoch (0-based)", state.epoch)
        yield _gauge("psyche_server_run_rounds", "current round within the epoch", state.height)
        yield _gauge("psyche_server_run_steps", "training steps completed", state.steps_done)
        yield _gauge(
            "psyche_server_target_steps", "steps the run trains in all", state.config.total_steps
        )
        members = GaugeMetricFamily(
            check_name("psyche_server_members_clients"), "client slots by state", labels=["state"]
        )
        counts = {s: 0 for s in CLIENT_STATES}
        for c in state.clients():
            if c.state.name in counts:
                counts[c.state.name] += 1
        for s, n in counts.items():
            members.add_metric([s], n)
        yield members
        yield _gauge(
            "psyche_server_open_connections",
            "client connections open now",
            float(getattr(self.server, "_open", 0)),
        )
        yield _counter(
            "psyche_server_empty_rounds_total",
            "data rounds nobody applied (no result reached a witness majority)",
            float(getattr(host, "empty_rounds", 0)),
        )
        yield _counter(
            "psyche_server_lost_samples_total",
            "samples dropped from the requeue",
            state.lost_samples,
        )
        latest = None
        for h in range(state.height, max(-1, state.height - _core.ROUND_RING), -1):
            rec = record_of(state, h)
            if rec is not None and rec.loss is not None:
                latest = rec
                break
        yield _gauge(
            "psyche_server_reported_loss_nats",
            "mean loss the newest round's witnesses reported (NaN before any)",
            float("nan") if latest is None or latest.loss is None else latest.loss,
        )
        yield _gauge(
            "psyche_server_reported_throughput_tokens_per_second",
            "newest round: mean reported tokens/s per client times its trainers",
            0.0 if latest is None else latest.tokens_per_s,
        )


class ClientCollector(Collector):
    """One client's `ClientStatus` as numbers."""

    def __init__(self, status: Callable[[], Any]) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        st = self.status()
        yield _phase_info("psyche_client_phase_info", str(st.phase))
        yield _gauge("psyche_client_run_epochs", "the run's current epoch", st.epoch)
        yield _gauge("psyche_client_run_steps", "the run's current step", st.step)
        yield _counter(
            "psyche_client_applied_steps_total", "steps this client applied", st.applied_steps
        )
        yield _gauge(
            "psyche_client_train_loss_nats",
            "loss of this client's newest trained batch (NaN before any)",
            float("nan") if st.loss is None else float(st.loss),
        )
        yield _gauge(
            "psyche_client_train_throughput_tokens_per_second",
            "tokens/s of this client's newest trained batch",
            float(st.tokens_per_s),
        )
        yield _gauge("psyche_client_connected_peers", "peers connected over p2p", st.peers)
        yield _counter("psyche_client_received_bytes_total", "result bytes received", st.bytes_in)
        yield _counter("psyche_client_sent_bytes_total", "result bytes published", st.bytes_out)
        yield _counter(
            "psyche_client_empty_rounds_total",
            "rounds skipped because no result reached a witness majority",
            st.empty_rounds,
        )
        yield _counter(
            "psyche_client_resynced_rounds_total",
            "times this client caught up from its peers' model",
            st.resyncs,
        )
        yield _gauge(
            "psyche_client_model_desynced_bool",
            "1 while this client lacks an agreed result and is catching up",
            1.0 if st.desynced else 0.0,
        )


def parse_metrics_address(text: str) -> tuple[str, int]:
    """PORT (binds 127.0.0.1) or HOST:PORT, with a one-line error for anything else."""
    from psyche_client.p2p.addr import AddressError, parse_host_port

    text = text.strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    try:
        hp = parse_host_port(text, allow_names=False, what="--metrics-port")
    except AddressError as e:
        raise MetricsAddressError(str(e)) from None
    return hp.host, hp.port


def serve_metrics(address: str, collector: Collector) -> tuple[Any, int]:
    """Serve `collector` at http://HOST:PORT/metrics in a daemon thread; returns (the HTTP
    server, the bound port). `server.shutdown()` stops it."""
    host, port = parse_metrics_address(address)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        httpd, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        reason = e.strerror or str(e)
        raise MetricsAddressError(f"cannot serve metrics on {host}:{port}: {reason}") from None
    return httpd, int(httpd.server_port)


def serve_server_metrics(address: str, server: Any) -> tuple[Any, int]:
    return serve_metrics(address, ServerCollector(server))


def serve_client_metrics(address: str, status: Callable[[], Any]) -> tuple[Any, int]:
    return serve_metrics(address, ClientCollector(status))
