"""The SDK facade against real TCP coordinators (in-process and a `serve` subprocess).

No training here (that is the notebook's test): a member joins over a real authenticated TCP
connection so that `watch()`/`wait()` must see the coordinator's pushes. The sync API is also
called from inside a running event loop, the way a Jupyter cell calls it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import psyche_client as psyche
from psyche_client.backend.tcp import TcpBackend
from psyche_client.errors import UserError
from psyche_client.identity import NodeKey
from psyche_client.sdk import loop as sdk_loop

pytestmark = pytest.mark.timeout(120)

CONFIG = {"min_clients": 2, "max_clients": 4, "total_steps": 4, "rounds_per_epoch": 4}


def members(s: psyche.RunStatus) -> int:
    return s.clients["Healthy"] + s.clients["Pending"]


def test_import_is_cheap_and_the_facade_is_lazy() -> None:
    code = (
        "import sys; import psyche_client as p; before = set(sys.modules); "
        "f = p.connect, p.create_run, p.join, p.RunStatus; "
        "heavy = [m for m in ('torch', 'solana', 'solders', 'anchorpy') if m in sys.modules]; "
        "assert not heavy, heavy; assert 'psyche_client.sdk' not in before; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError):
        _ = psyche.no_such_name  # type: ignore[attr-defined]


def test_create_watch_and_stop_inside_a_running_loop(tmp_path: Path) -> None:
    async def cell() -> None:
        # A notebook cell: the loop is running, and the blocking API must still work.
        run = psyche.create_run("sdk-tcp", config=CONFIG, state_dir=tmp_path / "server")
        assert run.status().phase == "WaitingForMembers"
        assert run.status().config["min_clients"] == 2
        viewer = psyche.connect(run.address)
        assert viewer.status() == run.status()
        seen: list[psyche.RunStatus] = []

        async def watch() -> None:
            async for s in viewer.watch(timeout_s=30):
                seen.append(s)
                if members(s) >= 1:
                    return

        watching = asyncio.create_task(watch())
        member = TcpBackend(run.address, NodeKey.generate())
        await member.start()
        await member.join()
        await asyncio.wait_for(watching, 30)
        assert members(seen[0]) == 0 and members(seen[-1]) == 1
        joined = await run.wait_async(lambda s: members(s) == 1, timeout_s=30)
        assert joined.phase == "WaitingForMembers"
        with pytest.raises(TimeoutError, match="did not reach phase Finished"):
            await run.wait_async(timeout_s=0.5)
        await member.stop()
        viewer.close()
        run.stop()
        assert run.closed
        with pytest.raises(UserError, match="cannot reach coordinator"):
            psyche.connect(run.address, timeout_s=5)

    asyncio.run(cell())


def test_watch_sync_in_a_script(tmp_path: Path) -> None:
    run = psyche.create_run("sdk-sync", config=CONFIG, state_dir=tmp_path)

    def join_one() -> None:
        async def go() -> None:
            member = TcpBackend(run.address, NodeKey.generate())
            await member.start()
            await member.join()
            await member.stop()

        asyncio.run(go())

    try:
        snapshots = run.watch_sync(timeout_s=30)
        assert members(next(snapshots)) == 0
        threading.Thread(target=join_one).start()
        assert any(members(s) == 1 for s in snapshots)
    finally:
        run.stop()


def test_state_dir_resumes_the_run(tmp_path: Path) -> None:
    first = psyche.create_run("sdk-resume", config=CONFIG, state_dir=tmp_path)
    first.stop()
    again = psyche.create_run("sdk-resume", config={"min_clients": 3}, state_dir=tmp_path)
    try:
        assert again.status().config["min_clients"] == 2, "the saved state wins, as in serve"
    finally:
        again.stop()
    with pytest.raises(UserError, match="holds another run"):
        psyche.create_run("sdk-other", state_dir=tmp_path)


def test_serve_subprocess_is_stopped_by_the_handle(tmp_path: Path) -> None:
    run = psyche.create_run("sdk-proc", config=CONFIG, state_dir=tmp_path, process=True)
    proc = run.process  # type: ignore[attr-defined]
    assert proc.poll() is None
    assert run.status().run == "sdk-proc"
    run.stop()
    assert proc.poll() is not None, "stop() ended the coordinator process"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: psyche.connect(""), "give a coordinator"),
        (lambda: psyche.connect("host:notaport"), "not a coordinator address"),
        (lambda: psyche.create_run("x", backend="ipfs"), "backend must be"),
        (lambda: psyche.create_run("x", config={"no_such": 1}), "unknown config field"),
        (lambda: psyche.create_run("x", config={"min_clients": 0}), "invalid run config"),
        (lambda: psyche.create_run("bad name!"), "run name"),
        (lambda: psyche.join("127.0.0.1:1", data="/no/such/file"), "does not exist"),
    ],
)
def test_user_mistakes_are_one_line_errors(call: object, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        call()  # type: ignore[operator]
    assert "\n" not in str(info.value)


def test_blocking_call_from_the_sdk_loop_is_refused() -> None:
    async def inner() -> None:
        psyche.connect("127.0.0.1:1")

    fut = sdk_loop.submit(inner())
    with pytest.raises(RuntimeError, match="use the async variant"):
        fut.result(10)
