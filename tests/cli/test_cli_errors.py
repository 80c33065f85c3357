"""Every user mistake ends in one line on stderr and exit code 2, never a traceback, and the
error path never imports torch (so the answer comes in well under a second)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TORCH_MARK = "psyche-test: torch imported:"
_RUNNER = (
    "import sys\n"
    "from psyche_client.cli import main\n"
    "try:\n"
    "    rc = main(sys.argv[1:])\n"
    "finally:\n"
    f"    print({TORCH_MARK!r}, 'torch' in sys.modules, flush=True)\n"
    "raise SystemExit(rc)\n"
)


def _cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _assert_user_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("psyche-client: error:") and needle in lines[0], lines[0]
    marks = [line for line in result.stdout.splitlines() if line.startswith(TORCH_MARK)]
    assert marks == [f"{TORCH_MARK} False"], f"torch was imported on the error path: {marks}"


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.bin"
    path.write_bytes(b"\x01\x00" * 1000)
    return path


def test_bad_coordinator_address(data_file: Path, tmp_path: Path) -> None:
    result = _cli("join", "host:notaport", f"--data={data_file}", f"--key={tmp_path / 'k'}")
    _assert_user_error(result, "host:port")
    no_wallet = _cli(
        "join",
        "not-an-address",
        f"--data={data_file}",
        f"--key={tmp_path / 'k'}",
        f"--wallet={tmp_path / 'missing.json'}",
    )
    _assert_user_error(no_wallet, "names a Solana run")


def test_unknown_solana_run(data_file: Path, tmp_path: Path) -> None:
    from psyche_client.identity import NodeKey, save_keypair

    save_keypair(NodeKey.generate(), tmp_path / "wallet.json")
    result = _cli(
        "join",
        "no-such-run",
        "--rpc=http://127.0.0.1:9",
        f"--wallet={tmp_path / 'wallet.json'}",
        f"--data={data_file}",
        f"--key={tmp_path / 'k'}",
    )
    _assert_user_error(result, "no-such-run")


def test_unreachable_coordinator(data_file: Path, tmp_path: Path) -> None:
    result = _cli("join", "127.0.0.1:9", f"--data={data_file}", f"--key={tmp_path / 'k.json'}")
    _assert_user_error(result, "cannot reach coordinator 127.0.0.1:9: Connection refused")


def test_missing_data_file(tmp_path: Path) -> None:
    result = _cli(
        "join", "127.0.0.1:9", f"--data={tmp_path / 'nope.bin'}", f"--key={tmp_path / 'k'}"
    )
    _assert_user_error(result, "does not exist")


def test_corrupt_key_file(data_file: Path, tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("[1, 2, 3]")
    result = _cli("join", "127.0.0.1:9", f"--data={data_file}", f"--key={key}")
    _assert_user_error(result, "not a Solana keypair")


def test_bad_run_name_and_config(tmp_path: Path) -> None:
    _assert_user_error(
        _cli("serve", "--run=bad name", f"--state-dir={tmp_path}"), "1-32 characters"
    )
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--set=bogus=1"),
        "unknown config field",
    )
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--set=min_clients=0"),
        "invalid run config",
    )
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--set=min_clients"),
        "name=integer",
    )


def test_corrupt_state_file(tmp_path: Path) -> None:
    (tmp_path / "state.bin").write_bytes(b"garbage")
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}"), "not a Psyche state file"
    )


def test_bad_model_reference(tmp_path: Path) -> None:
    _assert_user_error(
        _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--model=./missing-dir"),
        "not a directory",
    )


def test_usage_errors_are_one_line(data_file: Path, tmp_path: Path) -> None:
    _assert_user_error(_cli("join"), "Missing argument")
    _assert_user_error(_cli("serve", "--bogus"), "No such option")
    _assert_user_error(_cli("run", "status", "--run-id"), "requires an argument")
    threads = _cli("join", "127.0.0.1:9", f"--data={data_file}", "--threads=0")
    _assert_user_error(threads, "--threads")
    serve_data = ["data", "serve", f"--data={data_file}", "--coordinator=127.0.0.1:9"]
    _assert_user_error(_cli(*serve_data, "--seq-len=0"), "--seq-len")
    _assert_user_error(_cli(*serve_data, "--seq-len=8", "--port=99999"), "--port")


def test_random_bytes_key_file(data_file: Path, tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_bytes(os.urandom(64) + b"\xff\xfe")
    result = _cli("join", "127.0.0.1:9", f"--data={data_file}", f"--key={key}")
    _assert_user_error(result, "not a Solana keypair")


def test_negative_config_value_names_the_field(tmp_path: Path) -> None:
    result = _cli("serve", "--run=ok", f"--state-dir={tmp_path}", "--set=total_steps=-5")
    _assert_user_error(result, "total_steps")


def test_run_status_is_a_read_without_a_keypair(tmp_path: Path) -> None:
    result = _cli("run", "status", "--run-id=x", "--rpc=http://127.0.0.1:9", home=tmp_path)
    _assert_user_error(result, "cannot reach Solana RPC http://127.0.0.1:9")


class _Http(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Http)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_http_server_at_the_coordinator_address(
    http_server: int, data_file: Path, tmp_path: Path
) -> None:
    result = _cli(
        "join", f"127.0.0.1:{http_server}", f"--data={data_file}", f"--key={tmp_path / 'k'}"
    )
    _assert_user_error(result, "does not speak the Psyche coordinator protocol")


def _start_serve(state: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    port_file = state.parent / "port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "psyche_client.cli",
            "serve",
            "--run=r1",
            f"--state-dir={state}",
            "--listen=127.0.0.1:0",
            f"--port-file={port_file}",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (port_file.exists() and port_file.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.05)
    return proc, port_file.read_text().strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=30)


def test_restart_with_other_settings_is_refused_or_applied(tmp_path: Path) -> None:
    from psyche_client import _core
    from psyche_client.server.persist import load_state

    state = tmp_path / "state"
    proc, _ = _start_serve(state, "--set=total_steps=24", "--set=min_clients=2")
    _stop(proc)
    changed = _cli(
        "serve", "--run=r1", f"--state-dir={state}", "--set=total_steps=30", "--set=min_clients=2"
    )
    _assert_user_error(changed, "total_steps")
    assert "min_clients" not in changed.stderr
    proc, _ = _start_serve(state, "--set=total_steps=30", "--reconfigure")
    _stop(proc)
    saved = load_state(state / "state.bin")
    assert saved is not None
    config = _core.Coordinator.from_bytes(saved).config
    assert (config.total_steps, config.min_clients) == (30, 2)
    # --model names the initial model (checkpoints move a run's model on): another one on
    # resume is a note, not an error
    (tmp_path / "m").mkdir()
    proc, _ = _start_serve(state, f"--model={tmp_path / 'm'}")
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert "not applied" in out and "--reconfigure" in out


def test_a_failed_start_leaves_no_state_behind(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    state = tmp_path / "state"
    try:
        result = _cli(
            "serve",
            "--run=r2",
            f"--state-dir={state}",
            f"--listen=127.0.0.1:{port}",
            "--set=total_steps=7",
        )
    finally:
        busy.close()
    _assert_user_error(result, f"cannot listen on 127.0.0.1:{port}")
    assert not (state / "state.bin").exists()


def test_join_control_errors(data_file: Path, tmp_path: Path) -> None:
    _assert_user_error(
        _cli("serve", "--run=r3", f"--state-dir={tmp_path / 's'}", f"--allow={tmp_path / 'no'}"),
        "allowlist",
    )
    proc, address = _start_serve(tmp_path / "state", "--join-token=s3cret")
    try:
        key = f"--key={tmp_path / 'k.json'}"
        missing = _cli("join", address, f"--data={data_file}", key)
        _assert_user_error(missing, "needs a join token")
        wrong = _cli("join", address, f"--data={data_file}", key, "--join-token=guess")
        _assert_user_error(wrong, "not this run's")
    finally:
        _stop(proc)


def test_valid_key_files_still_load(tmp_path: Path) -> None:
    """A keypair written by the package stays loadable (the key checks did not get stricter
    for valid files)."""
    from psyche_client.identity import NodeKey, load_keypair, save_keypair

    key = NodeKey.generate()
    save_keypair(key, tmp_path / "id.json")
    assert json.loads((tmp_path / "id.json").read_text())[:32] == list(key.seed)
    assert load_keypair(tmp_path / "id.json").public == key.public


def test_unusable_paths_are_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _assert_user_error(_cli("serve", "--run=ok", f"--state-dir={a_file}"), "Not a directory")
    _assert_user_error(_cli("data", "make-corpus", str(a_file / "sub")), "Not a directory")
    _assert_user_error(_cli("model", "init", str(a_file)), "exists")
