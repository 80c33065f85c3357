"""The progress helper: log lines every N % off a terminal, a bar on one, silence for --json."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest

from psyche_client import progress as prog


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def default_mode() -> Iterator[None]:
    prog.configure()
    yield
    prog.configure()


def test_a_line_every_n_percent_off_a_terminal() -> None:
    out = io.StringIO()
    with prog.progress("model from peers", total=1000, every_pct=25, stream=out) as p:
        for chunk in (100, 100, 100, 400, 299):  # 10 20 30 | 70 (crosses 50 too) | 99.9
            p.advance(chunk)
        p.advance(1)
    assert out.getvalue().splitlines() == [
        "model from peers: 25% (300 B of 1000 B)",
        "model from peers: 50% (700 B of 1000 B)",
        "model from peers: 75% (999 B of 1000 B)",
        "model from peers: done (1000 B of 1000 B)",
    ]


def test_unknown_total_and_units() -> None:
    out = io.StringIO()
    with prog.progress("checkpoint", stream=out) as p:
        p.advance(3 << 20)
    assert out.getvalue() == "checkpoint: done (3.0 MiB)\n"
    out = io.StringIO()
    with prog.progress("shards", total=4, unit="shards", every_pct=50, stream=out) as p:
        p.update(2)
    assert out.getvalue().splitlines()[0] == "shards: 50% (2 shards of 4 shards)"


def test_quiet_for_json_and_quiet() -> None:
    for kwargs in ({"json": True}, {"quiet": True}):
        prog.configure(**kwargs)
        for stream in (io.StringIO(), Terminal()):
            with prog.progress("x", total=10, stream=stream) as p:
                p.advance(10)
            assert stream.getvalue() == ""


def test_a_bar_on_a_terminal_and_threads() -> None:
    out = Terminal()
    p = prog.progress("model from peers", total=4 << 20, stream=out)
    assert p.mode == "bar"
    workers = [threading.Thread(target=p.advance, args=(1 << 20,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    p.close()
    p.close()  # idempotent
    assert p.done == 4 << 20
    assert "model from peers" in out.getvalue()


def test_a_failure_leaves_no_done_line() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), prog.progress("save", total=10, stream=out) as p:
        p.advance(5)
        raise RuntimeError("disk full")
    assert "done" not in out.getvalue()
    p.advance(5)  # after close: ignored
    assert p.done == 5
