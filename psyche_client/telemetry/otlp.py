"""OTLP/HTTP metrics export (`--otlp-endpoint URL`): the collector's samples as OpenTelemetry
observable instruments, pushed every `OTEL_METRIC_EXPORT_INTERVAL` ms (the SDK's own setting;
60 s unless set) to URL/v1/metrics.

Each instrument's callback reads one snapshot of the collector, taken at most once per export
(all instruments are observed within one collection), so the state is read once per push, as
one Prometheus scrape reads it. Counters (`…_total`) are observable counters (cumulative),
the rest observable gauges.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse

from psyche_client.telemetry import Sample, SinkError, finite, samples

SNAPSHOT_TTL_S = 0.5
SHUTDOWN_MS = 2_000


def metrics_url(endpoint: str) -> str:
    """`http://host:4318` → `http://host:4318/v1/metrics` (a full …/v1/metrics stays)."""
    try:
        parsed = urlparse(endpoint)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SinkError(f"--otlp-endpoint {endpoint!r} is not an http(s) URL")
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/metrics") else base + "/v1/metrics"


class _Snapshot:
    """The newest samples, re-read when older than `SNAPSHOT_TTL_S`."""

    def __init__(self, collector: Any) -> None:
        self.collector = collector
        self.lock = threading.Lock()
        self.taken = 0.0
        self.by_name: dict[str, list[Sample]] = {}

    def get(self, name: str) -> list[Sample]:
        with self.lock:
            if time.monotonic() - self.taken > SNAPSHOT_TTL_S:
                grouped: dict[str, list[Sample]] = {}
                for s in samples(self.collector):
                    grouped.setdefault(s.name, []).append(s)
                self.by_name, self.taken = grouped, time.monotonic()
            return self.by_name.get(name, [])


def start_otlp(collector: Any, endpoint: str, service: str) -> Callable[[], None]:
    """Start pushing; returns the function that flushes and stops."""
    url = metrics_url(endpoint)
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        raise SinkError(
            "--otlp-endpoint needs opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http"
        ) from None
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url, timeout=10))
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": service})
    )
    meter = provider.get_meter("psyche_client")
    snapshot = _Snapshot(collector)
    first = samples(collector)  # the names are fixed per collector: one instrument each

    def callback(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(s.value, dict(s.labels)) for s in snapshot.get(name) if finite(s.value)
            ]

        return observe

    seen: set[str] = set()
    for s in first:
        if s.name in seen:
            continue
        seen.add(s.name)
        if s.counter:
            meter.create_observable_counter(s.name, callbacks=[callback(s.name)])
        else:
            meter.create_observable_gauge(s.name, callbacks=[callback(s.name)])

    def close() -> None:
        # One last export; a collector that does not answer delays exit by this much at most.
        provider.shutdown(timeout_millis=SHUTDOWN_MS)

    return close
