"""Writes examples/quickstart.ipynb from the cells below (the notebook is generated, not hand
edited, so its source stays reviewable as plain Python).

    .venv/bin/python examples/make_quickstart.py            # cells only
    .venv/bin/python examples/make_quickstart.py --execute  # and run it once (stores outputs)

tests/sdk/test_notebook.py executes the notebook with a real kernel against a local TCP run
and a localnet run (`PSYCHE_QUICKSTART_BACKEND=solana`, `PSYCHE_RPC`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "quickstart.ipynb"

CELLS: list[tuple[str, str]] = [
    (
        "markdown",
        """# Psyche quickstart: a training run from a notebook

This notebook creates a run, lets three clients join it and train a tiny model together, and
watches the run live: phase, steps, and the loss curve the witnesses report.

Everything runs on this machine. By default the coordinator is a TCP server inside this kernel;
set `PSYCHE_QUICKSTART_BACKEND=solana` (and `PSYCHE_RPC`, default `http://127.0.0.1:8899`) to
create the run on the coordinator program of a local validator instead (`make localnet`).

The SDK works inside Jupyter's running event loop: the blocking calls (`create_run`, `join`,
`status`, `wait`) run on the SDK's own background loop, and `watch()` is an async iterator you
can use with top-level `await`.""",
    ),
    (
        "code",
        """import os
import tempfile
from pathlib import Path

import psyche_client as psyche
from psyche_client.cli.model import model_init
from psyche_client.data.corpus import make_corpus

BACKEND = os.environ.get("PSYCHE_QUICKSTART_BACKEND", "tcp")
RPC = os.environ.get("PSYCHE_RPC", "http://127.0.0.1:8899")
work = Path(os.environ.get("PSYCHE_QUICKSTART_DIR") or tempfile.mkdtemp(prefix="psyche-nb-"))
work.mkdir(parents=True, exist_ok=True)

# A small token corpus and a ~0.1M-parameter model: what `psyche-client data make-corpus`
# and `psyche-client model init` write (and `make demo` uses).
data = make_corpus(work / "corpus", n_tokens=200_000)[0]
model_init(work / "model")
print("backend:", BACKEND, "| files in", work)""",
    ),
    ("markdown", "## Create the run"),
    (
        "code",
        """config = {
    "total_steps": 8,
    "rounds_per_epoch": 4,
    "batch_size_start": 12,
    "batch_size_end": 12,
    "batch_ramp_steps": 0,
    "min_clients": 3,
    "witnesses_per_round": 3,
    "waiting_extra_secs": 1,
    "warmup_secs": 60,
    "max_round_train_secs": 30,
    "round_witness_secs": 5,
    "witness_grace_secs": 1,
    "cooldown_secs": 2,
    "verification_pct": 0,
}
if BACKEND == "solana":
    from solders.keypair import Keypair

    owner = Keypair()  # a throwaway owner, funded by the local faucet
    config.update(
        total_steps=3,
        rounds_per_epoch=3,
        min_clients=2,
        witnesses_per_round=2,
        witness_quorum_pct=50,
        round_witness_secs=10,
        witness_grace_secs=2,
    )
    run = psyche.create_run(
        f"nb-{os.getpid()}",
        config=config,
        model=work / "model",
        backend="solana",
        rpc=RPC,
        keypair=owner,
        airdrop_sol=5,
    )
else:
    run = psyche.create_run(
        "quickstart", config=config, model=work / "model", state_dir=work / "server"
    )
print(run)
run.status()""",
    ),
    (
        "markdown",
        "## Join it with three clients\n\n"
        "Each `join` returns at once; the client trains in the background until the run ends.",
    ),
    (
        "code",
        """n_clients = 2 if BACKEND == "solana" else 3
clients = [
    psyche.join(
        run.address,
        data=data,
        rpc=RPC,
        checkpoint_dir=work / f"client{i}",
        airdrop_sol=1 if BACKEND == "solana" else 0,
    )
    for i in range(n_clients)
]
clients""",
    ),
    (
        "markdown",
        "## Watch it live\n\n"
        "`watch()` yields a new status snapshot whenever something changes, until `Finished`.",
    ),
    (
        "code",
        """import time

t0, last = time.monotonic(), None
async for s in run.watch(timeout_s=120):
    line = (s.phase, s.epoch, s.steps_done)
    if line != last:
        loss = "-" if s.loss is None else f"{s.loss:.3f}"
        print(
            f"{time.monotonic() - t0:5.1f}s {s.phase:17} epoch {s.epoch} "
            f"steps {s.steps_done:2}/{s.total_steps} healthy {s.clients['Healthy']} "
            f"loss {loss}"
        )
        last = line""",
    ),
    ("markdown", "## History: loss, tokens/s and clients per step"),
    (
        "code",
        """history = run.history()
for r in history:
    tps = f"{r.tokens_per_s:8.0f}"
    print(f"step {r.step:2}  loss {r.loss:.4f}  tokens/s {tps}  trainers {r.trainers}")
losses = history.losses()
steps = sorted(losses)
print(f"loss {losses[steps[0]]:.3f} -> {losses[steps[-1]]:.3f} over {len(steps)} steps")""",
    ),
    (
        "markdown",
        "A second view of the same run, as another notebook or a dashboard would open it: "
        "`psyche.connect` takes the TCP address or the Solana run account.",
    ),
    (
        "code",
        """viewer = psyche.connect(run.address, rpc=RPC)
final = viewer.status()
print(final.phase, final.steps_done, "steps of", final.total_steps)
viewer.close()""",
    ),
    ("markdown", "## Clean up"),
    (
        "code",
        """results = [c.wait(timeout_s=60) for c in clients]
run.stop()
summary = {
    "backend": BACKEND,
    "phase": final.phase,
    "steps_done": final.steps_done,
    "clients_applied": [r.applied_steps for r in results],
    "first_loss": losses[steps[0]],
    "last_loss": losses[steps[-1]],
}
print("SUMMARY", summary)""",
    ),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = kernel
    for kind, source in CELLS:
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(source))
    return nb


def main() -> None:
    nb = build()
    if "--execute" in sys.argv:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    nbformat.write(nb, NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
