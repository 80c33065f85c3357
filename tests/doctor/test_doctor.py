"""`psyche-client doctor` against a real TCP coordinator (in-process `create_run`), real data
(a prepared directory from a trained tokenizer, and a flat token file) and real sockets.

One run serves every case: the run's model is a LocalPath directory, which doctor re-reads on
each call, so rewriting its config.json between calls turns a matching vocabulary into a
mismatch without a second coordinator.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import psyche_client as psyche
from psyche_client import _core
from psyche_client.cli.app import main as cli_main
from psyche_client.doctor.coordinator import CoordinatorFacts, clock_check
from psyche_client.doctor.gpu import gpu_check, parse_nvidia_smi
from psyche_client.doctor.model import param_count
from psyche_client.doctor.network import _reach_check

pytestmark = pytest.mark.timeout(120)

VOCAB = 300


def write_model(directory: Path, vocab: int, hidden: int = 64) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": 172}
    (directory / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    (directory / "psyche.json").write_text(json.dumps({"seq_len": 32, "demo": {}}))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    from psyche_client.data.corpus import make_corpus, make_prepared_corpus

    root = tmp_path_factory.mktemp("doctor")
    model = root / "model"
    write_model(model, VOCAB)
    _tok, prepared = make_prepared_corpus(root / "prep", n_docs=60, vocab_size=VOCAB)
    flat = make_corpus(root / "flat", n_tokens=20_000)[0]
    run = psyche.create_run(
        "doctor", config={"min_clients": 2}, model=str(model), state_dir=root / "state"
    )
    try:
        yield {"root": root, "model": model, "prepared": prepared, "flat": flat, "run": run}
    finally:
        run.stop()


def doctor(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, tuple[str, str]], str]:
    """(exit code, check name -> (status, line), stderr)."""
    code = cli_main(["doctor", *args])
    out = capsys.readouterr()
    checks = {}
    for line in out.out.splitlines():
        status, name, *_ = line.split()
        if status in ("ok", "warn", "fail"):
            checks[name] = (status, line)
    return code, checks, out.err


def test_ready_to_join(world: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    run, root = world["run"], world["root"]
    assert isinstance(run, psyche.RunHandle) and isinstance(root, Path)
    code, checks, err = doctor(
        capsys,
        run.address,
        f"--data={world['prepared']}",
        f"--checkpoint-dir={root / 'ckpt'}",
        f"--key={root / 'absent.json'}",
        "--listen=127.0.0.1:0",
    )
    assert code == 0, (checks, err)
    for name in ("coordinator", "run", "join", "model", "device", "disk", "p2p", "data", "vocab"):
        assert checks[name][0] == "ok", checks[name]
    assert "v0.1.0" in checks["coordinator"][1]
    assert "WaitingForMembers" in checks["run"][1]
    assert f"vocab {VOCAB}" in checks["model"][1]
    assert "the coordinator sees this machine there too" in checks["reach"][1]
    assert checks["clock"][0] == "ok" and "coordinator's clock" in checks["clock"][1]
    assert not (root / "absent.json").exists()  # doctor creates no key file


def test_failures_are_lines_not_tracebacks(
    world: dict[str, object], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run, model = world["run"], world["model"]
    assert isinstance(run, psyche.RunHandle) and isinstance(model, Path)
    # a vocabulary mismatch: the data's tokenizer has more ids than the model's embedding
    write_model(model, 256)
    try:
        code, checks, err = doctor(capsys, run.address, f"--data={world['prepared']}")
        assert code == 2 and checks["vocab"][0] == "fail"
        assert f"vocabulary of {VOCAB}" in checks["vocab"][1] and "fix:" in checks["vocab"][1]
        assert err.strip().splitlines() == [
            "psyche-client: error: not ready to join: 1 failed, 0 warnings, 11 checks"
        ]
        # flat files say nothing of their tokenizer: their ids are read instead
        write_model(model, 64)
        code, checks, _ = doctor(capsys, run.address, f"--data={world['flat']}")
        assert code == 2 and "holds token id" in checks["vocab"][1]
        # a model far larger than this machine (4 bytes x 65536^2 x 2 layers x ... > any RAM)
        write_model(model, VOCAB, hidden=65536)
        code, checks, _ = doctor(capsys, run.address)
        assert (
            code == 2 and checks["device"][0] == "fail" and "training needs" in checks["device"][1]
        )
    finally:
        write_model(model, VOCAB)
    # a missing data directory
    code, checks, err = doctor(capsys, run.address, f"--data={tmp_path / 'nope'}")
    assert code == 2 and checks["data"][0] == "fail" and "does not exist" in checks["data"][1]
    assert "Traceback" not in err
    # a --listen port that is taken
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, checks, _ = doctor(capsys, run.address, f"--listen=127.0.0.1:{port}")
    assert code == 2 and checks["p2p"][0] == "fail" and "cannot listen" in checks["p2p"][1]


def test_json_lines_and_a_data_server(
    world: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json`: one object per check. A tcp:// data server (real, in a thread) answers
    non-members with a refusal: reachable, vocabulary not checkable before joining."""
    import asyncio

    from psyche_client.data.local import LocalTokenProvider
    from psyche_client.data.tcp import serve_data

    run = world["run"]
    assert isinstance(run, psyche.RunHandle)
    loop = asyncio.new_event_loop()
    provider = LocalTokenProvider([str(world["flat"])], 32)
    server = loop.run_until_complete(serve_data(provider, lambda _key: False))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = server.sockets[0].getsockname()[1]
    try:
        code = cli_main(["doctor", run.address, f"--data=tcp://127.0.0.1:{port}", "--json"])
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    by_name = {r["name"]: r for r in rows}
    assert set(rows[0]) == {"name", "status", "detail", "hint"}
    assert by_name["data"]["status"] == "ok" and "data server" in by_name["data"]["detail"]
    assert by_name["vocab"]["status"] == "warn" and by_name["vocab"]["hint"]


def test_join_control(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A run with a join token: refused without it (a fail with the fix), fine with it. Its
    model lives with its peers, so the model's size is a warning, not a failure."""
    run = psyche.create_run("doctor-token", state_dir=tmp_path, join_token="s3cret")
    try:
        code, checks, _ = doctor(capsys, run.address)
        assert code == 2 and checks["join"][0] == "fail" and "--join-token" in checks["join"][1]
        assert checks["model"][0] == "warn" and "peers" in checks["model"][1]
        code, checks, _ = doctor(capsys, run.address, "--join-token=s3cret")
        assert code == 0 and checks["join"][0] == "ok"
    finally:
        run.stop()


def test_coordinator_key(
    world: dict[str, object], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A pinned key must match; a key `join` remembered for the run is checked, and doctor
    itself records none."""
    run = world["run"]
    server_key = run.server.server_key.public  # type: ignore[attr-defined]
    address = run.address  # type: ignore[attr-defined]
    key = tmp_path / "node.json"
    code, checks, _ = doctor(capsys, address, f"--coordinator-key={server_key.hex()}")
    assert checks["coordinator"][0] == "ok"
    code, checks, _ = doctor(capsys, address, f"--coordinator-key={'ab' * 32}")
    assert code == 2 and checks["coordinator"][0] == "fail" and "pinned" in checks["coordinator"][1]
    code, checks, _ = doctor(capsys, address, f"--key={key}")
    assert checks["coordinator"][0] == "ok" and not (tmp_path / "known_coordinators.json").exists()
    (tmp_path / "known_coordinators.json").write_text(json.dumps({"doctor": "cd" * 32}))
    code, checks, _ = doctor(capsys, address, f"--key={key}")
    assert code == 2 and "known_coordinators.json" in checks["coordinator"][1]


def test_http_model_and_data(
    world: dict[str, object], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An http(s) model (config.json over HTTP) and http(s) data (Range reads of a flat file)."""
    import shutil

    from tests.training.conftest import RangeHandler

    flat = world["flat"]
    assert isinstance(flat, Path)
    write_model(tmp_path / "model", VOCAB)
    shutil.copy(flat, tmp_path / "tokens.bin")

    def handler(*args: object, **kw: object) -> RangeHandler:
        return RangeHandler(*args, directory=str(tmp_path), **kw)  # type: ignore[arg-type]

    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http.server_address[1]}"
    run = psyche.create_run("doctor-http", model=f"{base}/model", state_dir=tmp_path / "state")
    try:
        code, checks, err = doctor(capsys, run.address, f"--data={base}/tokens.bin")
    finally:
        run.stop()
        http.shutdown()
        http.server_close()
    assert code == 0, (checks, err)
    assert checks["model"][0] == "ok" and f"HttpUrl {base}/model" in checks["model"][1]
    assert checks["data"][0] == "ok" and checks["vocab"][0] == "ok"


def test_unreachable_coordinators(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    code, checks, err = doctor(capsys, f"127.0.0.1:{port}", "--listen=abc")
    assert code == 2 and checks["coordinator"][0] == "fail"
    assert checks["p2p"][0] == "fail" and "--listen 'abc'" in checks["p2p"][1]
    assert "Connection refused" in checks["coordinator"][1]
    assert checks["model"][0] == "fail" and checks["clock"][0] == "warn"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, checks, _ = doctor(capsys, "some-run", f"--rpc=http://127.0.0.1:{port}")
    assert code == 2 and "does not answer getVersion" in checks["coordinator"][1]
    # something that is not a coordinator (an HTTP server: say, the metrics port)
    http = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        code, checks, _ = doctor(capsys, f"127.0.0.1:{http.server_address[1]}", "--timeout=5")
    finally:
        http.shutdown()
        http.server_close()
    assert code == 2 and checks["coordinator"][0] == "fail"
    assert "protocol" in checks["coordinator"][1], checks["coordinator"]


def test_doctor_does_not_load_torch(world: dict[str, object]) -> None:
    run = world["run"]
    assert isinstance(run, psyche.RunHandle)
    code = (
        "import sys\n"
        "from psyche_client.cli import main\n"
        f"rc = main(['doctor', {run.address!r}, '--data={world['prepared']}'])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stdout + out.stderr


def test_param_count_matches_the_model() -> None:
    from psyche_client.training.model import LlamaConfig

    for cfg in (
        {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 172},
        {"hidden_size": 128, "num_attention_heads": 8, "num_key_value_heads": 2},
        {"vocab_size": 1000, "tie_word_embeddings": False, "num_hidden_layers": 3},
    ):
        assert param_count(cfg) == LlamaConfig.from_hf_dict(cfg).param_count()


@pytest.mark.parametrize(
    ("arch", "extra"),
    [
        ("llama", {}),
        ("mistral", {}),
        ("qwen2", {}),
        ("qwen3", {"head_dim": 32}),
        ("mixtral", {"num_local_experts": 4}),
        ("qwen3_moe", {"num_experts": 4, "moe_intermediate_size": 48, "head_dim": 16}),
    ],
)
def test_param_count_matches_transformers(arch: str, extra: dict[str, int]) -> None:
    """The architectures `model init --arch` makes, built on the meta device (no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 172}
    shape |= {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    cfg = AutoConfig.for_model(arch, **shape, **extra)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    expected = sum(p.numel() for p in model.parameters())
    assert param_count(json.loads(cfg.to_json_string())) == expected


def test_clock_skew_warns() -> None:
    state = _core.Coordinator(b"x" * 32)
    now = time.time()
    facts = CoordinatorFacts("tcp", "h:1", "h", state, server_time=now - 10, local_time=now)
    assert clock_check(facts).status == "warn"
    assert "10.0 s ahead" in clock_check(facts).detail
    facts.server_time = now - 0.5
    assert clock_check(facts).status == "ok"
    facts.server_time = None
    assert clock_check(facts).status == "warn"


def test_nat_is_named() -> None:
    # (public examples: Python counts the documentation ranges 192.0.2/24 etc. as private)
    nat = _reach_check("192.168.1.5", 4000, "1.1.1.1", "9.9.9.9", explicit=False)
    assert nat.status == "warn" and "behind NAT" in nat.detail
    assert "--public-addr 9.9.9.9:PORT" in nat.hint
    assert _reach_check("127.0.0.1", 4000, "1.1.1.1", "", False).status == "fail"
    assert _reach_check("9.9.9.9", 4000, "1.1.1.1", "9.9.9.9", False).status == "ok"
    assert _reach_check("192.168.1.5", 4000, "1.1.1.1", "", False).status == "warn"
    assert _reach_check("192.168.1.5", 4000, "", "", False).status == "ok"  # no coordinator


def test_gpus_from_nvidia_smi() -> None:
    text = "NVIDIA H200, 143771, 143000\nNVIDIA H200, 143771, 100000\nbad line\n"
    gpus = parse_nvidia_smi(text)
    assert [g.free_bytes >> 20 for g in gpus] == [143000, 100000]
    assert gpu_check(gpus, 50 << 30).status == "ok"
    sharded = gpu_check(gpus, 150 << 30)
    assert sharded.status == "ok" and "FSDP" in sharded.detail
    assert gpu_check(gpus, 300 << 30).status == "warn"
    assert gpu_check([], None).status == "warn"
