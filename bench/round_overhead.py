"""Per-round overhead of a real TCP run: wall time per round that is not forward/backward.

Runs the demo's run (coordinator + N client processes on loopback, tiny model, CPU) and reads the
clients' events: each `trained` event has the seconds spent in the train step (forward, backward,
compression) and the result's size; consecutive `applied` events give the wall time per step.
Prints a last line of key=value figures.

    .venv/bin/python bench/round_overhead.py [--clients 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from psyche_client.cli.demo import DEMO_CONFIG, prepare, read_events, start_client, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--set", action="append", default=[], help="config override, e.g. witness_grace_secs=0"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="psyche-bench-"))
    data, model = prepare(work)
    config = {**DEMO_CONFIG, "min_clients": args.clients}
    for pair in args.set:
        name, _, value = pair.partition("=")
        config[name] = int(value)
    server, address = start_server(work, "bench", model, config, work / "server.log")
    names = [f"client{i}" for i in range(args.clients)]
    procs = [start_client(work, n, address, data) for n in names]
    deadline = time.time() + args.timeout
    try:
        while any(p.poll() is None for p in procs):
            if time.time() > deadline:
                raise SystemExit(f"timed out; files in {work}")
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(10)
    if any(p.returncode != 0 for p in procs):
        raise SystemExit(f"a client failed; files in {work}")

    train_s, sizes, step_s = [], [], []
    for n in names:
        events = read_events(work / f"{n}.events.jsonl")
        train_s += [float(e["seconds"]) for e in events if e["event"] == "trained"]  # type: ignore[arg-type]
        sizes += [int(e["bytes"]) for e in events if e["event"] == "trained"]  # type: ignore[arg-type]
        applied = [e for e in events if e["event"] == "applied"]
        for a, b in zip(applied, applied[1:], strict=False):
            if a["epoch"] == b["epoch"]:
                step_s.append(float(b["time"]) - float(a["time"]))  # type: ignore[arg-type]
    mean_step = statistics.mean(step_s)
    mean_train = statistics.mean(train_s)
    print(f"clients={args.clients} steps_measured={len(step_s)} config={args.set} files={work}")
    print(
        f"round_s={mean_step:.3f} train_s={mean_train:.3f} "
        f"overhead_s={mean_step - mean_train:.3f} "
        f"overhead_frac={(mean_step - mean_train) / mean_step:.2f} "
        f"bytes_per_client_step={statistics.mean(sizes):.0f}"
    )


if __name__ == "__main__":
    main()
