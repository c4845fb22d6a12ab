"""The worker's Kafka consumer: faust's aiokafka consumer, whose input partitions librdkafka fetches.

- faust and aiokafka run the group, the commits and the changelogs; the touchpoint and consent partitions are
  fetched by streams/fetch.py (librdkafka, outside the interpreter) and go to the engine's inbox (streams/inbox.py),
  not through faust's conductor and streams (`_drain_input`, issue 8). aiokafka never fetches them.
- The seek to committed offsets after a rebalance sets where the input partitions are fetched from; nothing fetched
  before it is handed over (`perform_seek`, issue 9).
- Standby changelog seeks to unknown offsets start from the beginning instead of crashing (`readable_offsets`).
- The broker holds a changelog fetch 100 ms at most, not faust's 1.5 s (`_ConsumerThread`).
- faust's delivery loop, now for changelogs only, delivers without a race per message between rebalances
  (`_drain_messages`).
- The commit every `broker_commit_every` acks, which faust's loop awaits, is started beside the input's hand-over,
  not awaited in it (`commit_in_background`).

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
from mode import Service, ServiceT
from mode.utils.futures import notify

from streams.fetch import InputFetcher
from streams.inbox import Inbox
from streams.worker import Inbound

# How long the input's drain waits in librdkafka for a message before it looks at the assignment again.
INPUT_WAIT = 0.1
# How long the broker may hold a changelog fetch for its first byte (_ConsumerThread); idle standbys cost a fetch
# each time, so not the input's few milliseconds.
CHANGELOG_FETCH_WAIT_MS = 100


class _Consumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer whose input partitions (`inbox.topics`) an `InputFetcher` fetches.

    The seek after a rebalance must not race with the fetching (issue 9). faust resumes the stream partitions and
    only then seeks them to their committed offsets (`Recovery.on_recovery_completed`), asking the broker for each
    partition's committed offset in turn. Records handed over meanwhile, from a stale position, would be acked on
    top of those read again after the seek; with duplicates in a partition's acked offsets, `consecutive_numbers`
    ends each run at the first duplicate, so every commit moves the committed offset by one, and the partition's
    lag stays above zero for minutes although it is fully consumed. So an input partition is fetched only once a
    seek of the current assignment has given its position, nothing is fetched while a seek runs, and what was
    fetched before the seek is dropped (a new epoch of the fetcher). A partition without a committed offset starts
    from its beginning, as the group does for a partition it never committed; the engine skips touchpoints it
    applied before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seek_lock = asyncio.Lock()  # the delivery loop and the recovery may seek at the same time
        self._seeking = 0
        self._committing: asyncio.Future | None = None  # the last commit the input's hand-over started
        self._crashing: asyncio.Future | None = None  # held: the event loop keeps only weak references to tasks
        self.fetcher: InputFetcher | None = None

    async def on_start(self) -> None:
        await super().on_start()
        transport = self.transport
        self.fetcher = InputFetcher(transport.bootstrap, f"{self.app.conf.id}-fetch", transport.fetch_max_wait_ms,
                                    transport.inbox.batch_size)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        if self.fetcher is not None:
            self.fetcher.close()

    def _is_input_tp(self, tp: TP) -> bool:
        return tp.topic in self.transport.inbox.topics

    async def perform_seek(self) -> None:
        # Shielded: a seek cancelled halfway (another rebalance started) must not leave the input unfetched.
        await asyncio.shield(self._perform_seek_held_back())

    async def _perform_seek_held_back(self) -> None:
        async with self._seek_lock:
            generation = self.app.consumer_generation_id
            inputs = {tp for tp in self.assignment() if self._is_input_tp(tp)}
            self._seeking += 1
            self._sync_input()
            try:
                await super().perform_seek()
                if self.app.consumer_generation_id == generation:
                    self.fetcher.seek({tp: self._committed_offset.get(tp) for tp in inputs})
            finally:
                self._seeking -= 1
                self._sync_input()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # Positions come from the next assignment's seek: what was handed over may be dropped by the rebalance's
        # `flow_control.clear()` of the inbox.
        self.fetcher.reset()
        await super().on_partitions_revoked(revoked)

    def _sync_input(self) -> None:
        """Fetch the input partitions faust keeps active, unless the flow is held back or a seek runs."""
        if self._seeking or self._slow() or self.app.should_stop:
            self.fetcher.fetch(frozenset())
        else:
            self.fetcher.fetch({tp for tp in self._get_active_partitions() if self._is_input_tp(tp)})

    def verify_event_path(self, now: float, tp: TP) -> None:
        if not self._is_input_tp(tp):  # faust's check reads aiokafka's fetch state, which input partitions lack
            super().verify_event_path(now, tp)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Mapping[TP, list[Any]]:
        changelogs = {tp for tp in active_partitions or () if not self._is_input_tp(tp)}
        if not changelogs:  # aiokafka reads no partition as every partition; faust sleeps then too
            await asyncio.sleep(timeout)
            return {}
        return await super()._getmany(changelogs, timeout)

    async def seek_wait(self, partitions: Mapping[TP, int | None]) -> None:
        await super().seek_wait(readable_offsets(partitions))

    @Service.task
    async def _drain_input(self) -> None:
        """Hand what the fetcher fetched to the engine's inbox, a partition's messages at once.

        faust's loop turns each record into a faust message, looks up its partition's high watermark, tracks it for
        the revocation's `wait_empty` and awaits its delivery in `wait_first` against the suspension of the flow:
        four tasks and an `asyncio.wait` per message, the larger part of what Kafka and Faust cost this worker
        (profiled). Here a partition's messages go to the inbox together, and the engine's loop tracks the batch
        it takes instead (`track_batch`). Messages are handed over only while the flow runs between rebalances;
        a rebalance's `flow_control.clear()` empties the inbox, and the seek that follows sets the positions again.
        """
        fetcher = self.fetcher
        try:
            while not self.should_stop:
                self._sync_input()
                epoch = fetcher.epoch
                messages = fetcher.take() or await fetcher.wait(INPUT_WAIT)
                if not messages:
                    continue
                if fetcher.epoch != epoch:  # reassigned while waiting: these may come from before the change
                    fetcher.restart()
                    continue
                by_tp, errors = fetcher.group(messages)
                for error in errors:
                    self.log.warning("Fetching input: %s", error.str())
                await self._hand_over(by_tp, epoch)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.error("Fetching input failed, the worker stops: %s", exc)
            await self.app.crash(exc)

    async def _hand_over(self, by_tp: Mapping[TP, list[Inbound]], epoch: int) -> None:
        app, fetcher, inbox = self.app, self.fetcher, self.transport.inbox
        generation = app.consumer_generation_id
        for tp, messages in by_tp.items():
            if (fetcher.epoch != epoch or app.consumer_generation_id != generation or tp not in fetcher.fetching
                    or self._seeking or self._slow()):
                fetcher.restart()  # what is dropped here is fetched again
                return
            expected = fetcher.next_offset(tp)
            if expected is None:  # from the partition's beginning, wherever the log starts
                expected = messages[0].offset
            elif messages[0].offset < expected:  # librdkafka drops them; handed over twice, they would block commits
                messages = [message for message in messages if message.offset >= expected]
                if not messages:
                    continue
            if messages[-1].offset - expected != len(messages) - 1 and app.topics.acks_enabled_for(tp.topic):
                for message in messages:  # offsets missing from the log (compaction, transaction markers)
                    if message.offset > expected:
                        await self._add_gap(tp, expected, message.offset - 1)
                    expected = message.offset + 1
            last = messages[-1].offset
            self._read_offset[tp] = last
            fetcher.handed_over(tp, last)
            app.monitor.track_tp_end_offset(tp, fetcher.highwater(tp))
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                self.commit_in_background()
            await inbox.put_many(messages)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """faust's delivery loop for the changelog messages aiokafka fetches, without a race per message between
        rebalances. faust races each delivery against the suspension of the flow; between rebalances a delivery
        either completes without yielding or waits for room in a stream buffer, which its reader makes, so it is
        awaited directly. From the start of a rebalance until the worker is ready again each delivery is raced as
        faust does: each `flow_control.resume()` of the recovery empties the changelog buffers, so they must stay
        as empty as faust's turn of the event loop per message keeps them (a standby table otherwise loses the
        changelog records that sat there).
        The rest is faust's: records of partitions no longer active and below a partition's read offset (before a
        seek) are dropped, gaps are recorded for the commit, the read offset follows delivery, a fetch while the
        flow is off seeks back to the committed offsets.
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
        # Also whenever the flow is off: `stop_flow` sets `suspend_flow`.
        return self.app.rebalancing or self.suspend_flow.is_set() or not self.app.flow_control.is_active()

    async def _deliver(self, records: Mapping[TP, list[Any]], active: set[TP] | None) -> None:
        app = self.app
        generation = app.consumer_generation_id
        read_offset = self._read_offset
        for tp, fetched in records.items():
            acks = app.topics.acks_enabled_for(tp.topic)
            for record in fetched:
                if not self.flow_active or app.consumer_generation_id != generation:
                    return
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    break
                offset, last = record.offset, read_offset[tp]
                if last is not None and offset < last:
                    continue
                if last and offset - last > 1 and acks:
                    await self._add_gap(tp, last + 1, offset)
                if self._slow():
                    await self.wait_first(self.callback(self._to_message(tp, record)), self.suspend_flow.wait())
                else:
                    await self.callback(self._to_message(tp, record))
                read_offset[tp] = offset
            await asyncio.sleep(0)

    def commit_in_background(self) -> None:
        """Start a commit unless one is under way, without waiting for it.

        faust's delivery loop awaits its commit every `broker_commit_every` acks: a flush of the producer and a
        round trip to the broker, during which no fetched record reaches the engine. Measured there at 15,000
        touchpoints/s: a commit each 0.7 s that held the loop 21 ms (p50), 94 ms (p99) and up to 110 ms, so
        touchpoints fetched meanwhile waited as long before a batch could take them (issue 8)."""
        if self._commit_fut is not None or (self._committing is not None and not self._committing.done()):
            return
        self._committing = asyncio.ensure_future(self.commit())
        self._committing.add_done_callback(self._commit_ended)

    def _commit_ended(self, task: asyncio.Future) -> None:
        # faust's commit logs and crashes on the failures it knows; anything else stops the worker as it would have
        # from faust's delivery loop, unless the worker is stopping anyway.
        if task.cancelled() or task.exception() is None or self.app.should_stop:
            return
        self.log.error("Commit raised: %r", task.exception())
        self._crashing = asyncio.ensure_future(self.app.crash(task.exception()))

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

    def ack_batch(self, token: InFlight, offsets: Mapping[TP, list[int]]) -> None:
        """faust's `ack` for each input message of the batch `token` stands for (their `batch_offsets`), and then
        for the batch: the offsets become committable once consecutive (with those of earlier batches)."""
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


def batch_offsets(messages: Sequence[Inbound]) -> dict[TP, list[int]]:
    """The offsets of a batch's messages by partition, in order: all its ack needs of them. A batch waits for its
    acks up to the state write delay, and its messages' values would be held that long (~0.1 GB at 38,000/s and
    5 s)."""
    offsets: dict[TP, list[int]] = {}
    for message in messages:
        offsets.setdefault(message.context, []).append(message.offset)
    return offsets


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
    """faust's consumer thread, whose aiokafka consumer leaves the input partitions to the fetcher and holds a
    changelog fetch at most CHANGELOG_FETCH_WAIT_MS.

    aiokafka keeps one fetch in flight per broker and leaves out of it the partitions whose records are still
    buffered, so a fetch that went out when only caught-up partitions were left holds the others back until it
    returns: up to faust's 1.5 s. After a takeover the standby changelogs' last records came ~1 s later (measured:
    recovery with a standby 0.9-1.1 s, against 0.06-0.3 s when that bound applied to every fetch).
    """

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = CHANGELOG_FETCH_WAIT_MS  # aiokafka 0.14 reads it in start()
        return consumer

    async def on_partitions_assigned(self, assigned: set[TP], generation: int) -> None:
        # A new assignment starts unpaused; paused, aiokafka keeps its positions but sends no fetch for them.
        inputs = self.consumer.transport.inbox.topics
        self._ensure_consumer().pause(*(TopicPartition(*tp) for tp in assigned if tp.topic in inputs))
        await super().on_partitions_assigned(assigned, generation)


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with the consumer above, which hands the messages of `inbox.topics` to `inbox`;
    set on the app before anything creates a consumer."""

    Consumer = _Consumer

    def __init__(self, url: Any, app: Any, inbox: Inbox) -> None:
        super().__init__(url, app)
        self.inbox = inbox
        self.bootstrap = ",".join(f"{u.host}:{u.port or 9092}" for u in self.url)
        # The broker holds an input fetch until FETCH_MIN_BYTES are ready or a quarter of the batch timeout passed.
        self.fetch_max_wait_ms = max(1, round(inbox.within * 1000 / 4))
