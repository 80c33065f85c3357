"""OTLP and wandb sinks carry the Prometheus names and values.

OTLP: a tiny HTTP receiver in the test takes the exporter's POSTs to /v1/metrics and decodes
them with opentelemetry-proto. wandb: offline mode (no account, no network) writes the run
under WANDB_DIR; its .wandb file (a LevelDB-style log of protobuf records) is read back and
the logged loss found in its history records.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from psyche_client.client import ClientStatus
from psyche_client.metrics import ClientCollector
from psyche_client.telemetry import SinkError, samples, start_sinks
from psyche_client.telemetry.otlp import metrics_url
from tests.telemetry.otlp_receiver import Receiver, otlp_points, receiver

pytestmark = pytest.mark.timeout(60)
__all__ = ["receiver"]  # the fixture


def test_otlp_pushes_the_prometheus_names(receiver: Receiver) -> None:
    status = ClientStatus(phase="RoundTrain", step=7, applied_steps=6, loss=2.5, bytes_out=123)
    collector = ClientCollector(lambda: status)
    sinks = start_sinks(collector, otlp_endpoint=receiver.url, service="psyche-test")
    sinks.close()  # flushes one export
    assert receiver.posts and {p for p, _ in receiver.posts} == {"/v1/metrics"}
    got = otlp_points(receiver.posts)
    expected = {(s.name, s.labels): s.value for s in samples(collector)}
    assert set(got) == set(expected)
    assert got[("psyche_client_train_loss_nats", ())] == 2.5
    assert got[("psyche_client_sent_bytes_total", ())] == 123
    assert got[("psyche_client_phase_info", (("phase", "RoundTrain"),))] == 1


def test_otlp_leaves_out_nan_and_checks_the_url(receiver: Receiver) -> None:
    sinks = start_sinks(ClientCollector(ClientStatus), otlp_endpoint=receiver.url + "/v1/metrics")
    sinks.close()
    names = {name for name, _ in otlp_points(receiver.posts)}
    assert "psyche_client_run_steps" in names
    assert "psyche_client_train_loss_nats" not in names  # NaN before the first batch
    assert metrics_url("http://h:4318/") == "http://h:4318/v1/metrics"
    with pytest.raises(SinkError, match="not an http"):
        start_sinks(ClientCollector(ClientStatus), otlp_endpoint="h:4318")


def wandb_records(path: Path) -> list[bytes]:
    """The records of a .wandb file: a 7-byte W&B header, then LevelDB log blocks of 32 KiB
    whose chunks are (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, out, partial = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left  # zero padding to the block's end
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        else:
            out.append(partial + chunk)
    return out


def test_wandb_offline_run_holds_the_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    status = ClientStatus(phase="RoundTrain", step=3, loss=2.5)
    collector = ClientCollector(lambda: status)
    sinks = start_sinks(collector, wandb_project="psyche-test", wandb_interval_s=60)
    sinks.close()  # logs a last row and finishes the run
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    records: list[wandb_internal_pb2.Record] = []
    deadline = time.monotonic() + 20
    while not any(r.WhichOneof("record_type") == "history" for r in records):
        # wandb's writer process may still be appending when finish() returns
        assert time.monotonic() < deadline, "the offline run never recorded a row"
        time.sleep(0.1)
        records = []
        for raw in wandb_records(run_file):
            records.append(wandb_internal_pb2.Record())
            records[-1].ParseFromString(raw)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    steps = [r.metric.step_metric for r in records if r.WhichOneof("record_type") == "metric"]
    assert "psyche_client_run_steps" in steps  # charts use the run's step as their x axis
    rows = [r for r in rows if "_step" in r]
    assert len(rows) == 1, rows  # the one row close() logs (the interval is 60 s)
    row = rows[0]
    assert row["psyche_client_train_loss_nats"] == 2.5
    assert row["psyche_client_run_steps"] == 3
    assert row["psyche_client_phase_info/phase=RoundTrain"] == 1
    expected = {s.flat_name() for s in samples(collector)}
    assert expected <= set(row)
