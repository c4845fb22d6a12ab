"""The worker's Kafka consumer: faust's aiokafka consumer with two repairs and a cheaper delivery loop.

- The seek to committed offsets after a rebalance does not race with the fetcher (`_Consumer`, issue 9).
- Standby changelog seeks to unknown offsets start from the beginning instead of crashing (`readable_offsets`).
- The broker holds a fetch for 256 KiB up to a quarter of the batch timeout, not for a byte up to 1.5 s
  (`_ConsumerThread`).
- Input messages go to the engine's inbox (streams/inbox.py), not through faust's conductor and streams; the
  others (changelogs) go to the conductor, between rebalances without a race per message (`_drain_messages`,
  issue 8).
- The delivery loop's commit every `broker_commit_every` acks runs beside it, not in it (`commit_in_background`).

These rely on private parts of faust-streaming 0.15.3 (named where used): re-check them when upgrading faust.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ack_lock
from mode import ServiceT
from mode.utils.futures import notify

from streams.inbox import Inbox
from streams.worker import Inbound

# A backlog fills it at once (a fetch takes up to 1 MiB per partition); live traffic does not within the wait bound
# (touchpoints take ~25-50 bytes each in lz4 record batches), so there the bound decides when a fetch returns.
FETCH_MIN_BYTES = 256 * 1024


async def _pause_fetching(consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> set[TopicPartition]:
    """Pause those of `tps` that are assigned and not paused yet; returns them. Runs in the consumer's thread."""
    pausing = (tps & consumer.assignment()) - consumer.paused()
    consumer.pause(*pausing)
    return pausing


async def _resume_fetching(consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> None:
    """Resume those of `tps` that are still assigned (a new assignment starts unpaused). Runs in its thread."""
    consumer.resume(*(tps & consumer.assignment()))


class _Consumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with a seek to the committed offsets that does not race with the fetcher.

    After a rebalance faust resumes the stream partitions and only then seeks them to their committed offsets
    (`Recovery.on_recovery_completed`), with the flow already on since table recovery. The seek asks the broker
    for each partition's committed offset in turn, and meanwhile faust delivers records of the resumed
    partitions. The seek then sets each partition's read offset back to the committed offset, below records
    already delivered; the next record looks like a gap to `_drain_messages`, and `_new_offset` merges the gap
    into the partition's acked offsets on top of the offsets acked for real. With duplicates in that list,
    `consecutive_numbers` ends each run at the first duplicate, so every commit (each 2.8 s) moves the
    partition's committed offset by one: its lag stays above zero for minutes although it is fully consumed.

    So the stream partitions are held back while the seek runs, at both levels: faust stops handing over the
    records it already fetched (it drops them, their positions moved past them), and aiokafka withholds the
    records it fetches without moving their positions. faust's hold alone would not do: it takes partitions
    out of the set faust fetches, aiokafka reads an empty set as "every partition", and faust drops what it gets
    for them after the seek, so such a partition is never read again. The seek moves partitions with a committed
    offset back to it; those without one restart from the beginning (what the group does for a partition it
    never committed), which also brings back records faust dropped at the start of a rebalance. The engine
    skips touchpoints it applied before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seek_lock = asyncio.Lock()  # the fetcher and the recovery may seek at the same time
        self._committing: asyncio.Future | None = None  # the last commit the delivery loop started
        self._crashing: asyncio.Future | None = None  # held: the event loop keeps only weak references to tasks

    async def perform_seek(self) -> None:
        # Shielded: a seek cancelled halfway (another rebalance started) must not leave partitions held back.
        await asyncio.shield(self._perform_seek_held_back())

    async def _perform_seek_held_back(self) -> None:
        async with self._seek_lock:
            consumer = self._thread._ensure_consumer()
            generation = self.app.consumer_generation_id
            streams = {tp for tp in consumer.assignment() if not self._is_changelog_tp(tp)}
            delivering = {tp for tp in self._get_active_partitions() | self._buffered_partitions
                          if not self._is_changelog_tp(tp)}
            withheld = await self._thread.call_thread(_pause_fetching, consumer, streams)
            self.pause_partitions(delivering)
            self._buffered_partitions.difference_update(delivering)  # faust hands these over even when paused
            try:
                await super().perform_seek()
                uncommitted = [tp for tp in streams if self._committed_offset.get(tp) is None]
                if uncommitted and self.app.consumer_generation_id == generation:
                    await self._thread.seek_to_beginning(*uncommitted)
            finally:
                if self.app.consumer_generation_id == generation:
                    # After a new assignment faust itself pauses and resumes the partitions of that generation.
                    self.resume_partitions(delivering)
                await self._thread.call_thread(_resume_fetching, consumer, withheld)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_wait(self, partitions: Mapping[TP, int | None]) -> None:
        await super().seek_wait(readable_offsets(partitions))

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Hand the fetched input messages to the engine's inbox, a partition's fetched records at once, and every
        other message to faust's conductor as faust's own loop does, without a race per message between rebalances.

        faust's loop (`getmany` and its caller) turns each record into a faust message, looks up its partition's
        high watermark, tracks it for the revocation's `wait_empty` and awaits its delivery in `wait_first` against
        the suspension of the flow: four tasks and an `asyncio.wait` per message, the larger part of what Kafka and
        Faust cost this worker (profiled). Between rebalances an input partition's records become `Inbound` tuples
        in one pass and go to the inbox together; the engine's loop tracks the batch it takes instead
        (`track_batch`). Other deliveries either complete without yielding or wait for room in a stream buffer,
        which its reader makes, or for faust's producer buffer to drain, which its producer does on its own; so
        they are awaited directly. From the start of a rebalance until the worker is ready again each delivery is
        raced as faust does, for two reasons: a delivery may wait for a flow that only the table recovery this loop
        feeds resumes, and each `flow_control.resume()` of the recovery empties the changelog and stream buffers,
        so they must stay as empty as faust's turn of the event loop per message keeps them (a standby table
        otherwise loses the changelog records that sat there).
        The rest is faust's: records of partitions no longer active and below a partition's read offset (before a
        seek) are dropped, gaps are recorded for the commit, a commit every `broker_commit_every` acks (started
        here, not awaited), the read offset follows delivery, a fetch while the flow is off seeks back to the
        committed offsets.
        """
        try:
            while not (self.should_stop or fetcher.should_stop):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                if records is not None and not self.should_stop:
                    if self.flow_active:
                        await self._deliver(records, active)
                    else:
                        await self._seek_back()
                self.diag.unset_flag(CONSUMER_FETCHING)
                await asyncio.sleep(0)  # a fetch can return at once, again and again
        except (*self.consumer_stopped_errors, asyncio.CancelledError):
            if self.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _seek_back(self) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:
            self.log.warning(f"exception performing seek when flow not active {exc}")

    def _slow(self) -> bool:
        return self.app.rebalancing or self.suspend_flow.is_set() or not self.app.flow_control.is_active()

    async def _deliver(self, records: Mapping[TP, list[Any]], active: set[TP] | None) -> None:
        app = self.app
        generation = app.consumer_generation_id
        inbox = self.transport.inbox
        for tp, fetched in records.items():
            if not self.flow_active or app.consumer_generation_id != generation:
                return
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            last = self._read_offset[tp]
            if last is not None:
                fetched = [record for record in fetched if record.offset >= last]
            if not fetched:
                continue
            app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                self.commit_in_background()
            if tp.topic in inbox.topics and not self._slow():
                await self._hand_over(tp, fetched, last, inbox)
            else:
                await self._deliver_each(tp, fetched, generation, active)
            await asyncio.sleep(0)

    def commit_in_background(self) -> None:
        """Start a commit unless one is under way, without waiting for it.

        faust's delivery loop awaits its commit every `broker_commit_every` acks: a flush of the producer and a
        round trip to the broker, during which no fetched record reaches the engine. Measured at 15,000
        touchpoints/s: a commit each 0.7 s that held the loop 21 ms (p50), 94 ms (p99) and up to 110 ms, so
        touchpoints fetched meanwhile waited as long before a batch could take them (issue 8)."""
        if self._commit_fut is not None or (self._committing is not None and not self._committing.done()):
            return
        self._committing = asyncio.ensure_future(self.commit())
        self._committing.add_done_callback(self._commit_ended)

    def _commit_ended(self, task: asyncio.Future) -> None:
        # faust's commit logs and crashes on the failures it knows; anything else stops the worker as it would have
        # from the delivery loop, unless the worker is stopping anyway.
        if task.cancelled() or task.exception() is None or self.app.should_stop:
            return
        self.log.error("Commit raised: %r", task.exception())
        self._crashing = asyncio.ensure_future(self.app.crash(task.exception()))

    async def _hand_over(self, tp: TP, fetched: list[Any], last: int | None, inbox: Inbox) -> None:
        topic, partition = tp.topic, tp.partition
        messages = [Inbound(topic, partition, record.offset, record.key, record.value, tp) for record in fetched]
        first, end = messages[0].offset, messages[-1].offset
        missing = end - first != len(messages) - 1 or (last and first - last > 1)
        if missing and self.app.topics.acks_enabled_for(topic):
            for message in messages:  # faust's test, message by message, where some offset is missing
                if last and message.offset - last > 1:
                    await self._add_gap(tp, last + 1, message.offset)
                last = message.offset
        self._read_offset[tp] = messages[-1].offset
        await inbox.put_many(messages)

    async def _deliver_each(self, tp: TP, fetched: list[Any], generation: int, active: set[TP] | None) -> None:
        """faust's delivery, a message at a time; input messages go to the inbox once the flow allows. As faust
        does, each message is dropped once the partition is no longer active: a delivery yields, and meanwhile a
        seek may pause the partition and set its read offset back, which a later message of this fetch must not
        move forward again: the records read again from there would be dropped as already delivered, and the
        partition's commit would stop at them (tests/reliability/test_crashes.py caught it)."""
        app = self.app
        read_offset = self._read_offset
        inbox = self.transport.inbox
        to_inbox = tp.topic in inbox.topics
        acks = app.topics.acks_enabled_for(tp.topic)
        for record in fetched:
            if not self.flow_active or app.consumer_generation_id != generation:
                return
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            offset, last = record.offset, read_offset[tp]
            if last is not None and offset < last:
                continue
            if last and offset - last > 1 and acks:
                await self._add_gap(tp, last + 1, offset)
            slow = self._slow()
            if to_inbox:
                message = Inbound(tp.topic, tp.partition, offset, record.key, record.value, tp)
                if slow:
                    await self.wait_first(inbox.put_when_flowing(message), self.suspend_flow.wait())
                else:
                    await inbox.put(message)
            elif slow:
                await self.wait_first(self.callback(self._to_message(tp, record)), self.suspend_flow.wait())
            else:
                await self.callback(self._to_message(tp, record))
            read_offset[tp] = offset

    def track_batch(self, size: int) -> InFlight:
        """The engine took a batch of `size` input messages: a revocation's `wait_empty` waits until it is acked.
        One entry in faust's set of unacked messages for the batch, not one per message."""
        token = InFlight(size)
        self._unacked_messages.add(token)  # type: ignore[arg-type]  # faust reads only `acked` and `refcount`
        return token

    def release_batch(self, token: InFlight) -> None:
        """Stop waiting for the batch `token` stands for, without acking its messages: they are read again."""
        with ack_lock:
            token.acked = True
            self._unacked_messages.discard(token)  # type: ignore[arg-type]
            notify(self._waiting_for_ack)

    def ack_batch(self, token: InFlight, messages: Sequence[Inbound]) -> None:
        """faust's `ack` for each input message of the batch `token` stands for, and then for the batch: the
        offsets become committable once consecutive (with those of earlier batches)."""
        offsets: dict[TP, list[int]] = {}
        for message in messages:
            offsets.setdefault(message.context, []).append(message.offset)
        with ack_lock:
            for tp, taken in offsets.items():
                if not self.app.topics.acks_enabled_for(tp.topic):
                    continue
                committed = self._committed_offset[tp]
                index, acked = self._acked_index[tp], self._acked[tp]
                new = set(taken)
                if len(new) == len(taken) and index.isdisjoint(new) and (committed is None or min(new) >= committed):
                    # The usual batch: offsets not acked before, none twice, none committed; at once.
                    index.update(new)
                    acked.extend(taken)
                    self._n_acked += len(taken)
                    continue
                for offset in taken:
                    if (committed is None or offset >= committed) and offset not in index:
                        index.add(offset)
                        acked.append(offset)
                        self._n_acked += 1
        self.release_batch(token)


class InFlight:
    """A batch the engine took, as an entry of faust's set of unacked messages (weakly referenced)."""

    __slots__ = ("acked", "refcount", "__weakref__")

    def __init__(self, size: int) -> None:
        self.acked = False
        self.refcount = size  # what faust's wait_empty logs of an entry


def readable_offsets(partitions: Mapping[TP, int | None]) -> dict[TP, int]:
    """Offsets aiokafka accepts: none unknown or negative. faust's recovery seeks every standby changelog
    partition to the offset it built for it, but one assigned after that build still holds None
    (`Recovery._add`); aiokafka refuses it ("Offset must be a positive integer") and the worker crashes. From
    the start is what faust itself does for an unknown offset (-1), and a changelog replayed from its start
    gives the same table."""
    return {tp: offset if offset is not None and offset >= 0 else 0 for tp, offset in partitions.items()}


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, whose fetches the broker holds until `FETCH_MIN_BYTES` are ready or a quarter of
    the batch timeout has passed, whichever comes first.

    faust asks the broker to hold a fetch up to 1.5 s for a single byte. aiokafka keeps one fetch in flight per
    broker and leaves out of it the partitions whose records are still buffered, so a fetch that went out while
    every busy partition was buffered holds only quiet ones (such as the consent topic's), and the busy ones are
    not fetched again until it returns. Seen in latency runs (issue 8): whole runs at a p50 of 1.2-1.5 s with the
    worker well under its capacity; none with a bound. A bound alone, with a byte as the minimum, turned a steady
    2,000 touchpoints/s into ~520 fetches/s, each a request, a response and a hop between threads: 0.75 cores of
    the worker. Waiting for `FETCH_MIN_BYTES` up to a quarter of the batch timeout, ~150 fetches/s and 0.38 cores,
    with the same latency (measured); a backlog fills a fetch at once.
    """

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka 0.14 reads both in start()
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        return consumer


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with the consumer above, which hands the messages of `inbox.topics` to `inbox`;
    set on the app before anything creates a consumer."""

    Consumer = _Consumer

    def __init__(self, url: Any, app: Any, inbox: Inbox) -> None:
        super().__init__(url, app)
        self.inbox = inbox
        self.fetch_max_wait_ms = max(1, round(inbox.within * 1000 / 4))
