"""Operator join control: only allowlisted node keys and/or join-token holders may join, each
refusal is typed and worded so the client can say what to do, and the token never travels."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from psyche_client.backend.tcp import JoinRefused, TcpBackend
from psyche_client.errors import UserError
from psyche_client.identity import NodeKey
from psyche_client.server.app import CoordinatorServer
from psyche_client.server.join_policy import (
    AllowList,
    AllowListError,
    JoinPolicy,
    join_proof,
    read_allowlist,
)
from tests.server.helpers import MemberCore

RUN = "run-j"


async def _joins(server: CoordinatorServer, key: NodeKey, token: str | None = None) -> str:
    """ "ok", or the refusal's message, for one join attempt by `key`."""
    backend = TcpBackend(server.address, key, join_token=token)
    await backend.start()
    try:
        await backend.join()
        return "ok"
    except JoinRefused as e:
        return str(e)
    finally:
        await backend.stop()


def _run(tmp_path: Path, policy: JoinPolicy, body: object) -> MemberCore:
    core = MemberCore()

    async def go() -> None:
        server = CoordinatorServer(core, RUN, tmp_path / "state.bin", join_policy=policy)
        await server.start()
        try:
            await body(server)  # type: ignore[operator]
        finally:
            await server.stop()

    asyncio.run(go())
    return core


def test_allowlist_admits_listed_keys_only(tmp_path: Path) -> None:
    listed, stranger, late = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    allow = tmp_path / "allow.txt"
    allow.write_text(f"# operators' list\n{listed.pubkey}  # alice\n\n")
    policy = JoinPolicy(allow=AllowList(allow))

    async def body(server: CoordinatorServer) -> None:
        assert await _joins(server, listed) == "ok"
        refused = await _joins(server, stranger)
        assert "not on this run's allowlist" in refused and str(stranger.pubkey) in refused
        allow.write_text(f"{listed.pubkey}\n{late.public.hex()}\n")  # admitted without restart
        os.utime(allow, ns=(1, 10**18))
        assert await _joins(server, late) == "ok"

    core = _run(tmp_path, policy, body)
    assert core.members() == {listed.public, late.public}


def test_join_token_is_required_and_checked(tmp_path: Path) -> None:
    a, b, c = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()

    async def body(server: CoordinatorServer) -> None:
        assert await _joins(server, a, token="s3cret") == "ok"
        assert "needs a join token" in await _joins(server, b)
        assert "not this run's" in await _joins(server, c, token="guess")

    core = _run(tmp_path, JoinPolicy(token="s3cret"), body)
    assert core.members() == {a.public}


def test_an_open_run_lets_anyone_join(tmp_path: Path) -> None:
    key = NodeKey.generate()

    async def body(server: CoordinatorServer) -> None:
        assert await _joins(server, key) == "ok"

    assert _run(tmp_path, JoinPolicy(), body).members() == {key.public}


def test_join_proof_is_bound_to_connection_and_key() -> None:
    key, other = NodeKey.generate().public, NodeKey.generate().public
    proof = join_proof("t", b"c" * 32, key)
    assert proof != join_proof("t", b"d" * 32, key)
    assert proof != join_proof("t", b"c" * 32, other)
    assert len(proof) == 32  # an HMAC, not the token


def test_allowlist_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "allow.txt"
    with pytest.raises(AllowListError, match="does not exist"):
        read_allowlist(path)
    path.write_text(f"{NodeKey.generate().pubkey}\nnot-a-key\n")
    with pytest.raises(AllowListError, match=r"allow.txt:2: 'not-a-key' is not a node public key"):
        read_allowlist(path)
    path.write_bytes(os.urandom(64) + b"\xff")
    with pytest.raises(AllowListError, match="not a text file"):
        read_allowlist(path)
    assert issubclass(AllowListError, UserError) and issubclass(JoinRefused, UserError)
