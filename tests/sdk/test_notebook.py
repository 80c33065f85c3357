"""examples/quickstart.ipynb, executed cell by cell by nbclient in a real ipykernel.

Once against a TCP run the notebook creates inside the kernel, once against a run it creates
on localnet (the validator fixture of tests/solana). Each time three (TCP) or two (Solana)
clients train a tiny model to the end while the notebook watches with `async for` in the
kernel's running event loop. Asserted from the notebook's own output: the run finished, every
client applied every step, the watch saw the phases, and the reported loss fell.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOK = EXAMPLES / "quickstart.ipynb"
GENERATOR = EXAMPLES / "make_quickstart.py"

pytestmark = pytest.mark.timeout(300)


def execute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    """Run every cell in a fresh kernel (the kernel inherits `env`); all stream output."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PSYCHE_QUICKSTART_DIR", str(tmp_path / "work"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        nb,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream"
    )


def summary(text: str) -> dict[str, Any]:
    line = next(ln for ln in text.splitlines() if ln.startswith("SUMMARY "))
    return dict(ast.literal_eval(line.removeprefix("SUMMARY ")))


def check(text: str, backend: str, steps: int, clients: int) -> None:
    s = summary(text)
    assert s["backend"] == backend
    assert s["phase"] == "Finished" and s["steps_done"] == steps, s
    assert s["clients_applied"] == [steps] * clients, "every client applied every step"
    assert s["last_loss"] < s["first_loss"], s
    for phase in ("WaitingForMembers", "Warmup", "RoundTrain", "Cooldown", "Finished"):
        assert phase in text, f"the watch never showed {phase}:\n{text}"
    assert f"over {steps} steps" in text, "the history holds every step"


def test_the_notebook_is_its_generator_output() -> None:
    """examples/quickstart.ipynb is written by examples/make_quickstart.py; no hand edits."""
    spec = importlib.util.spec_from_file_location("make_quickstart", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stored = nbformat.read(NOTEBOOK, as_version=4)
    built = module.build()
    assert [(c.cell_type, c.source) for c in stored.cells] == [
        (c.cell_type, c.source) for c in built.cells
    ], "run `.venv/bin/python examples/make_quickstart.py --execute`"


def test_quickstart_on_a_local_tcp_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = execute(tmp_path, monkeypatch, PSYCHE_QUICKSTART_BACKEND="tcp")
    check(text, "tcp", steps=8, clients=3)


def test_quickstart_on_localnet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rpc_url: str
) -> None:
    text = execute(tmp_path, monkeypatch, PSYCHE_QUICKSTART_BACKEND="solana", PSYCHE_RPC=rpc_url)
    check(text, "solana", steps=3, clients=2)
