"""`psyche.join` handles stop their client cleanly: in-process (the client withdraws, its task
ends) and as a `psyche-client join` process (SIGTERM, the CLI's clean exit).

The run waits for more clients than join, so nothing trains: what is asserted is the
coordinator's view (member counted, then gone) and the handle's (not running, no error).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from solders.keypair import Keypair

import psyche_client as psyche
from psyche_client.data.corpus import make_corpus
from psyche_client.errors import UserError

pytestmark = pytest.mark.timeout(180)


TOKEN = "sdk-join-token"


def members(s: psyche.RunStatus) -> int:
    return s.clients["Healthy"] + s.clients["Pending"]


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "process"])
def test_stop_leaves_the_run(tmp_path: Path, process: bool) -> None:
    data = make_corpus(tmp_path / "corpus", n_tokens=20_000)[0]
    run = psyche.create_run(
        "sdk-join", config={"min_clients": 3}, state_dir=tmp_path / "srv", join_token=TOKEN
    )
    try:
        client = psyche.join(
            run.address,
            data=data,
            key=tmp_path / "node.json",
            checkpoint_dir=tmp_path / "ckpt",
            process=process,
            join_token=TOKEN,
        )
        assert client.running
        joined = run.wait(lambda s: members(s) == 1, timeout_s=90)
        assert joined.phase == "WaitingForMembers"
        if not process:
            port = client.serve_metrics()
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            assert 'psyche_client_phase_info{phase="WaitingForMembers"} 1.0' in text
        else:
            with pytest.raises(UserError, match="in-process"):
                client.serve_metrics()
        client.stop(timeout_s=60)
        assert not client.running
        run.wait(lambda s: members(s) == 0, timeout_s=30)  # it withdrew
        client.wait(timeout_s=5)  # and ended without an error
        if process:
            assert client.process is not None and client.process.returncode == 0
        else:
            assert client.status is not None and client.status.phase == "WaitingForMembers"
    finally:
        run.stop()


def test_a_failed_client_process_surfaces_its_error(tmp_path: Path) -> None:
    data = make_corpus(tmp_path / "corpus", n_tokens=20_000)[0]
    client = psyche.join(
        "127.0.0.1:1", data=data, key=tmp_path / "node.json", process=True, max_epochs=1
    )
    with pytest.raises(UserError, match=r"exited with 2: psyche-client: error: .*127\.0\.0\.1:1"):
        client.wait(timeout_s=90)
    with pytest.raises(UserError, match="keypair file path"):
        psyche.join("run", data=data, key=tmp_path / "k.json", process=True, wallet=Keypair())


def test_a_run_with_a_join_token_refuses_a_client_without_it(tmp_path: Path) -> None:
    data = make_corpus(tmp_path / "corpus", n_tokens=20_000)[0]
    run = psyche.create_run(
        "sdk-gated", config={"min_clients": 3}, state_dir=tmp_path / "srv", join_token=TOKEN
    )
    try:
        client = psyche.join(run.address, data=data, checkpoint_dir=tmp_path / "ckpt")
        with pytest.raises(UserError, match="join token"):
            client.wait(timeout_s=60)
        assert members(run.status()) == 0
    finally:
        run.stop()
    with pytest.raises(UserError, match="TCP runs"):
        psyche.join("demo", data=data, join_token=TOKEN)
    with pytest.raises(UserError, match="must not be empty"):
        psyche.create_run("sdk-empty", state_dir=tmp_path / "e", join_token="")
