"""The inbox between the consumer and the engine: full batches at once, partial ones `within` after the previous
batch, at most two batches held, and nothing fetched before a rebalance delivered after it."""

import asyncio

from mode.utils.queues import FlowControlEvent

from streams.inbox import Inbox


def _inbox(batch_size: int = 3, within: float = 0.05) -> tuple[Inbox, FlowControlEvent]:
    flow = FlowControlEvent(initially_suspended=False)
    return Inbox(["touchpoints"], batch_size, within, flow), flow


def test_a_full_batch_is_taken_at_once_and_the_rest_waits_for_the_next():
    async def scenario() -> tuple[list, float, list]:
        inbox, _ = _inbox(batch_size=3, within=10.0)
        for m in range(4):
            await inbox.put_many([m])
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = await inbox.take()
        waited = loop.time() - started
        for m in (4, 5):
            await inbox.put_many([m])
        return first, waited, await inbox.take()

    first, waited, second = asyncio.run(scenario())
    assert first == [0, 1, 2] and waited < 1.0
    assert second == [3, 4, 5]


def test_a_partial_batch_is_taken_once_its_time_has_passed_since_the_previous_batch():
    async def scenario() -> tuple[list, float, list, float]:
        inbox, _ = _inbox(batch_size=100, within=0.5)
        loop = asyncio.get_running_loop()
        taking = asyncio.ensure_future(inbox.take())
        await asyncio.sleep(0.1)  # nothing arrives: no empty batch
        assert not taking.done()
        arrived = loop.time()
        await inbox.put_many(["a"])
        lone = await taking  # after a quiet spell: at once
        taken = loop.time()
        waited_lone = taken - arrived
        await inbox.put_many(["b"])
        await inbox.put_many(["c"])
        return lone, waited_lone, await inbox.take(), loop.time() - taken

    lone, waited_lone, batch, waited = asyncio.run(scenario())
    assert lone == ["a"] and waited_lone < 0.25
    assert batch == ["b", "c"]
    assert 0.45 <= waited < 2.0


def test_the_delivery_waits_for_room_beyond_two_batches():
    async def scenario() -> tuple[bool, bool, list]:
        inbox, _ = _inbox(batch_size=2, within=10.0)
        for m in range(4):
            await inbox.put_many([m])
        fifth = asyncio.ensure_future(inbox.put_many([4]))
        await asyncio.sleep(0.01)
        blocked = not fifth.done()
        await inbox.take()
        await asyncio.sleep(0.01)
        return blocked, fifth.done(), await inbox.take()

    blocked, delivered, batch = asyncio.run(scenario())
    assert blocked and delivered
    assert batch == [2, 3]


def test_a_rebalance_drops_what_waits_and_what_was_fetched_before_it():
    async def scenario() -> list:
        inbox, flow = _inbox(batch_size=1, within=10.0)
        await inbox.put_many(["old-1"])
        await inbox.put_many(["old-2"])
        late = asyncio.ensure_future(inbox.put_many(["old-3"]))  # waits for room
        await asyncio.sleep(0.01)
        flow.suspend()
        flow.clear()  # what faust does to its stream buffers when partitions are revoked
        await late
        flow.resume()
        await inbox.put_many(["new"])
        return await inbox.take()

    assert asyncio.run(scenario()) == ["new"]


def test_a_fetch_handed_over_at_once_fills_two_batches_and_the_rest_waits_for_room_in_order():
    async def scenario() -> tuple[int, list, list, list]:
        inbox, _ = _inbox(batch_size=2, within=10.0)
        handing = asyncio.ensure_future(inbox.put_many(list(range(7))))
        await asyncio.sleep(0.01)
        held = len(inbox)
        batches = [await inbox.take() for _ in range(3)]
        await handing
        return held, *batches

    held, first, second, third = asyncio.run(scenario())
    assert held == 4
    assert [first, second, third] == [[0, 1], [2, 3], [4, 5]]


def test_a_rebalance_drops_the_rest_of_a_fetch_that_waits_for_room():
    async def scenario() -> list:
        inbox, flow = _inbox(batch_size=1, within=10.0)
        handing = asyncio.ensure_future(inbox.put_many(["old-1", "old-2", "old-3", "old-4"]))
        await asyncio.sleep(0.01)
        flow.clear()
        await handing
        await inbox.put_many(["new"])
        return await inbox.take()

    assert asyncio.run(scenario()) == ["new"]


def test_an_idle_take_returns_nothing_after_the_idle_time_and_a_batch_as_usual_when_messages_come():
    async def scenario() -> tuple[list, float, list]:
        inbox, _ = _inbox(batch_size=3, within=10.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        idle = await inbox.take(idle=0.05)
        waited = loop.time() - started
        for m in range(3):
            await inbox.put_many([m])
        return idle, waited, await inbox.take(idle=0.05)

    idle, waited, batch = asyncio.run(scenario())
    assert idle == [] and 0.04 <= waited < 1.0
    assert batch == [0, 1, 2]
