"""The SDK loop's blocking bridge tells its own deadline from the coroutine's."""

from __future__ import annotations

import asyncio

import pytest

from psyche_client.sdk.loop import run_sync


def test_a_timeout_inside_the_coroutine_is_its_answer_not_the_bridges() -> None:
    async def own_deadline() -> None:
        await asyncio.wait_for(asyncio.sleep(10), 0.01)

    with pytest.raises(TimeoutError) as caught:
        run_sync(own_deadline())  # no bridge timeout: before the fix this was a TypeError
    assert "no answer within" not in str(caught.value)
    with pytest.raises(TimeoutError, match="no answer within 0.05 s"):
        run_sync(asyncio.sleep(10), timeout_s=0.05)
    assert run_sync(asyncio.sleep(0, result=7), timeout_s=5) == 7
