"""Round time across capped links versus the bound the links allow.

A real run (`psyche-client serve` + N `join`, each in its own network namespace of
`tests/wan/netns.py`; needs root) at each link rate: every client's link is capped at RATE both
ways with a one-way delay, the coordinator's link is uncapped. For each rate it measures the
mean wall time between consecutive applied steps of an epoch (`round_s`) and compares it with

    bound = train_s + bytes_in / rate + 2 × RTT_peer + RTT_coord

where `train_s` is the train-step time (forward, backward, compression) of the slowest
trainer of each step (a round cannot end before it), averaged over the steps, `bytes_in` =
(trainers − 1) × the mean result size (every client downloads every other trainer's result,
and uploads its own as many times, so the link carries that much each way),
`RTT_peer` the round trip between two clients (announcement, then request and payload) and
`RTT_coord` that to the coordinator (witness, then the state push). The model is larger than the
demo's (and its top-k higher) so that payloads, not fixed costs, set the bound. The client
overlaps a round's transfers with the next round's training, so the round can beat that sum;
the row also gives the pipelined bound, max(train_s, bytes_in / rate) + the RTTs. Prints one
row per rate and a last line of key=value figures.

    sudo .venv/bin/python bench/wan.py [--rates 20,5] [--delay-ms 10] [--dim 384 --layers 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psyche_client.cli.demo import DEMO_CONFIG  # noqa: E402
from tests.wan.netns import Link, Wan  # noqa: E402
from tests.wan.run import COORDINATOR, WanRun, cli  # noqa: E402

COORD_DELAY_MS = 2.0


def measure(args: argparse.Namespace, rate: float, work: Path) -> dict[str, float]:
    """One run at `rate` Mbit/s per client link; the figures of its rounds."""
    config = {
        **DEMO_CONFIG,
        "min_clients": args.clients,
        "total_steps": args.steps,
        "rounds_per_epoch": args.steps,
        "witnesses_per_round": args.clients,
    }
    for pair in args.set:
        name, _, value = pair.partition("=")
        config[name] = int(value)
    with Wan() as wan:
        wan.add_host(COORDINATOR, Link(delay_ms=COORD_DELAY_MS))
        names = [f"client{i}" for i in range(args.clients)]
        link = Link(up_mbit=rate, down_mbit=rate, delay_ms=args.delay_ms)
        for n in names:
            wan.add_host(n, link)
        run = WanRun(work, config=config, run="bench", wan=wan)
        run.model = work / "bench-model"
        subprocess.run(
            [
                *cli(),
                *("model", "init", str(run.model), "--dim", str(args.dim)),
                *("--layers", str(args.layers), "--topk", str(args.topk)),
            ],
            check=True,
            capture_output=True,
        )
        try:
            run.start_server()
            for n in names:
                run.start_client(n)
            run.wait_clients(names, timeout=args.timeout)
        finally:
            run.stop()
    train_by_step: dict[int, list[float]] = {}
    sizes: list[int] = []
    round_s: list[float] = []
    for n in names:
        events = run.events(n)
        for e in events:
            if e["event"] == "trained":
                train_by_step.setdefault(int(e["step"]), []).append(float(e["seconds"]))  # type: ignore[call-overload, arg-type]
                sizes.append(int(e["bytes"]))  # type: ignore[call-overload]
        applied = [e for e in events if e["event"] == "applied"]
        for a, b in zip(applied, applied[1:], strict=False):
            if a["epoch"] == b["epoch"]:
                round_s.append(float(b["time"]) - float(a["time"]))  # type: ignore[arg-type]
    # A round cannot end before its slowest trainer has trained: the bound takes the slowest.
    train = statistics.mean(max(t) for t in train_by_step.values())
    size = statistics.mean(sizes)
    bytes_in = (args.clients - 1) * size
    rtt_peer = 4 * args.delay_ms / 1000
    rtt_coord = 2 * (args.delay_ms + COORD_DELAY_MS) / 1000
    transfer = bytes_in * 8 / (rate * 1e6)
    bound = train + transfer + 2 * rtt_peer + rtt_coord
    measured = statistics.mean(round_s)
    return {
        "rate_mbit": rate,
        "round_s": measured,
        "round_median_s": statistics.median(round_s),
        "train_s": train,
        "transfer_s": transfer,
        "rtt_s": 2 * rtt_peer + rtt_coord,
        "bound_s": bound,
        "ratio": measured / bound,
        "pipelined_bound_s": max(train, transfer) + 2 * rtt_peer + rtt_coord,
        "result_bytes": size,
        "rounds": len(round_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="20,5", help="Mbit/s per client link, comma-separated")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay per link")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--topk", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--set", action="append", default=[], help="config override name=value")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="psyche-wan-bench-"))
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        row = measure(args, rate, root / f"rate{rate:g}")
        rows.append(row)
        print(
            f"rate={rate:g}Mbit/s round_s={row['round_s']:.3f} "
            f"(median {row['round_median_s']:.3f}) "
            f"bound_s={row['bound_s']:.3f} = train {row['train_s']:.3f} + transfer "
            f"{row['transfer_s']:.3f} + rtt {row['rtt_s']:.3f}; ratio={row['ratio']:.2f} "
            f"(pipelined bound {row['pipelined_bound_s']:.3f}: "
            f"ratio {row['round_s'] / row['pipelined_bound_s']:.2f}) "
            f"result_bytes={row['result_bytes']:.0f} rounds={row['rounds']:.0f}",
            flush=True,
        )
    print(f"files={root} delay_ms={args.delay_ms} clients={args.clients} set={args.set}")
    print(" ".join(f"ratio_{r['rate_mbit']:g}mbit={r['ratio']:.2f}" for r in rows), end=" ")
    print(" ".join(f"round_s_{r['rate_mbit']:g}mbit={r['round_s']:.3f}" for r in rows))


if __name__ == "__main__":
    main()
