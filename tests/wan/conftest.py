"""Fixtures of the WAN tests: a `Wan` that is torn down after the test, pass or fail.

These tests are part of `make test` and CI runs as root, so a machine that cannot build the
network (not root, no `ip`/`nft`/`tc`) fails them with one clear line instead of skipping.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wan.netns import Host, Wan, WanError, namespaces, require

PROBE = [sys.executable, str(Path(__file__).with_name("probe.py"))]


def need_wan() -> None:
    """Fail the test in one line if this machine cannot build the simulated WAN."""
    try:
        require()
        return
    except WanError as e:
        reason = str(e)
    pytest.fail(f"cannot build the simulated WAN: {reason}", pytrace=False)


@pytest.fixture
def wan() -> Iterator[Wan]:
    need_wan()
    net = Wan()
    reason = ""
    try:
        net.start()
    except WanError as e:
        reason = str(e)
    if reason:
        net.close()
        pytest.fail(f"cannot build the simulated WAN: {reason}", pytrace=False)
    try:
        yield net
    finally:
        net.close()
    left = [ns for ns in namespaces() if ns.startswith(net.tag + "-")]
    assert not left, f"namespaces left behind: {left}"


def probe(wan: Wan, host: Host, *args: str) -> str:
    """Run a probe command inside `host` and return its one-line answer."""
    return wan.exec(host.name, *PROBE, *args).strip()


def probe_server(wan: Wan, host: Host, port: int) -> subprocess.Popen[bytes]:
    """Start the probe server inside `host` and wait until it listens."""
    proc = wan.popen(host.name, [*PROBE, "serve", str(port)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"listening"
    return proc
