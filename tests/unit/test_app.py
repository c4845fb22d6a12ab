"""Worker start-up: local state is trusted only after a clean stop; the changelogs exist before faust needs them."""

import asyncio
import gc
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from streams import topics
from streams.app import (CLEAN_STOP, GC_YOUNG_THRESHOLD, Acks, StaggeredOptions, create_app,
                         discard_state_after_crash, settle_garbage_collector, staggered_write_buffer)
from streams.consumer import CHANGELOG_FETCH_WAIT_MS, batch_offsets, readable_offsets
from streams.settings import load
from streams.topics import CONSENT_TABLE, STATE_TABLE
from streams.worker import Inbound


def test_state_left_by_a_crash_is_discarded(tmp_path):
    (tmp_path / "v1").mkdir()
    assert discard_state_after_crash(tmp_path) is True
    assert not tmp_path.exists()


def test_state_left_by_a_clean_stop_is_kept_once(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / CLEAN_STOP).touch()
    assert discard_state_after_crash(tmp_path) is False
    assert (tmp_path / "v1").is_dir() and not (tmp_path / CLEAN_STOP).exists()
    assert discard_state_after_crash(tmp_path) is True  # the mark is used up: the next start needs a new one


def test_a_fresh_folder_is_left_alone(tmp_path):
    assert discard_state_after_crash(tmp_path / "new") is False
    assert discard_state_after_crash(tmp_path) is False


def test_the_changelogs_created_up_front_are_the_ones_faust_writes_to():
    settings = load({}, {})
    app = faust.App(settings.app_id, store="memory://")
    names = {app.Table(table, partitions=settings.partitions).changelog_topic_name
             for table in (STATE_TABLE, CONSENT_TABLE)}
    assert names == set(topics.changelogs(settings))


def test_seeks_to_unknown_or_negative_offsets_start_the_partition_from_its_beginning():
    tps = [TP("lam-customer-state-changelog", p) for p in range(5)]
    assert readable_offsets(dict(zip(tps, [None, -2, -1, 0, 41]))) == dict(zip(tps, [0, 0, 0, 0, 41]))


def test_the_input_is_fetched_from_the_settings_broker_with_a_quarter_of_the_batch_timeout_as_the_wait():
    settings = load({"batch_timeout": "0.08", "bootstrap_servers": "kafka-1:9093,kafka-2"}, {})
    app = create_app(settings, SimpleNamespace(model=SimpleNamespace(version="test")))
    assert (app.transport.bootstrap, app.transport.fetch_max_wait_ms) == ("kafka-1:9093,kafka-2:9092", 20)


def test_the_broker_holds_a_changelog_fetch_a_tenth_of_a_second_at_most():
    async def fetch_wait() -> int:
        app = create_app(load({}, {}), SimpleNamespace(model=SimpleNamespace(version="test")))
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()
            thread.thread_loop.close()  # the thread's own loop, which only its start would run and close

    assert asyncio.run(fetch_wait()) == CHANGELOG_FETCH_WAIT_MS == 100  # faust's own: 1,500 ms


def test_the_worker_freezes_its_start_up_heap_and_collects_young_objects_rarely():
    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _ack(batches: list[tuple[int, ...]], committed: int) -> tuple[list[int], list[int], int, int | None]:
    """Offsets of the input partition 3 taken and acked batch by batch, after a commit at `committed`: the
    unacked entries faust's wait_empty waits for after each take and after its ack, the acked offsets, their
    count, and the offset the next commit would write."""
    settings = load({}, {})
    engine = SimpleNamespace(model=SimpleNamespace(version="test"))
    tp = TP(settings.input_topic, 3)

    async def scenario() -> tuple[list[int], list[int], int, int | None]:
        app = create_app(settings, engine)
        await app.topics._update_indices()  # what the worker's start does: acks on for the input topics
        consumer = _consumer(app)
        consumer._committed_offset[tp] = committed
        pending = []
        for offsets in batches:
            batch = [Inbound(tp.topic, tp.partition, offset, b"c1", b"{}", tp) for offset in offsets]
            taken = consumer.track_batch(len(batch))
            pending.append(len(consumer._unacked_messages))
            consumer.ack_batch(taken, batch_offsets(batch))
            pending.append(len(consumer._unacked_messages))
        return pending, sorted(consumer._acked[tp]), consumer._n_acked, consumer._new_offset(tp)

    return asyncio.run(scenario())


def _consumer(app: faust.App) -> Any:
    """The app's consumer, with the loop of its thread closed: only the thread's start would run and close it, and
    left open it warns in whichever test the garbage collector runs."""
    consumer = app.consumer
    consumer._thread.thread_loop.close()
    return consumer


def test_a_taken_batch_holds_off_the_revocation_until_its_acks_make_its_offsets_committable():
    # 9 is below the committed offset, 11 came twice (a redelivery), 12 is still on its way
    pending, acked, counted, commit = _ack([(9, 10, 11, 11, 13)], committed=10)
    assert pending == [1, 0]
    assert acked == [10, 11, 13] and counted == 3
    assert commit == 12  # 10 and 11 follow the committed offset; 13 waits for 12


def test_batches_of_new_offsets_are_acked_whole_and_a_batch_with_an_acked_one_offset_by_offset():
    pending, acked, counted, commit = _ack([(10, 11, 12), (13, 15, 14), (15, 16)], committed=10)
    assert pending == [1, 0, 1, 0, 1, 0]
    assert acked == [10, 11, 12, 13, 14, 15, 16] and counted == 7  # 15 once
    assert commit == 17


def test_batches_are_acked_once_their_states_are_written_and_let_go_unacked_when_a_rebalance_drops_them():
    settings = load({}, {})
    tp = TP(settings.input_topic, 3)
    engine = SimpleNamespace(model=SimpleNamespace(version="test"), keep=lambda owned: True)

    async def scenario() -> tuple[list[int], int, list[int], int]:
        app = create_app(settings, engine)
        await app.topics._update_indices()
        consumer, acks = _consumer(app), Acks(app)
        for epoch in (1, 2, 3):
            batch = [Inbound(tp.topic, tp.partition, 10 * epoch + i, b"c1", b"{}", tp) for i in range(2)]
            acks.hold(epoch, consumer.track_batch(len(batch)), batch)
        acks.ack_written(3)  # the states of epochs 1 and 2 are written, not those of 3
        acked, waiting = sorted(consumer._acked[tp]), len(consumer._unacked_messages)
        app.consumer_generation_id += 1  # a rebalance that dropped unwritten states
        consumer.assignment = lambda: set()
        acks.after_rebalance(engine)
        return acked, waiting, sorted(consumer._acked[tp]), len(consumer._unacked_messages)

    acked, waiting, acked_after, waiting_after = asyncio.run(scenario())
    assert acked == [10, 11, 20, 21] and waiting == 1
    assert acked_after == acked and waiting_after == 0  # 30 and 31 are read again, not committed


def test_state_partitions_get_write_buffers_of_different_sizes_around_the_mean(tmp_path):
    sizes = [staggered_write_buffer(16 * 2**20, p) for p in range(12)]
    assert len(set(sizes)) == 12 and all(12 * 2**20 <= s <= 20 * 2**20 for s in sizes)
    assert abs(sum(sizes) / 12 - 16 * 2**20) < 2**20
    app = create_app(load({}, {}), SimpleNamespace(model=SimpleNamespace(version="test")))
    data = app.tables[STATE_TABLE].data
    assert isinstance(data.rocksdb_options, StaggeredOptions)
    path = tmp_path / f"{STATE_TABLE}-7.db"  # as faust names partition 7's database
    data.rocksdb_options.open(path).close()
    written = (sorted(path.glob("OPTIONS-*"))[-1]).read_text()  # the options RocksDB opened it with
    mean = data.rocksdb_options.write_buffer_size
    assert f"\n  write_buffer_size={staggered_write_buffer(mean, 7)}\n" in written
    assert staggered_write_buffer(mean, 7) != mean


def test_the_hand_over_starts_one_commit_at_a_time_without_waiting_and_a_failed_one_stops_the_worker():
    settings = load({}, {})
    engine = SimpleNamespace(model=SimpleNamespace(version="test"))

    async def scenario() -> tuple[int, int, list[BaseException]]:
        app = create_app(settings, engine)
        consumer, release, started, crashes = _consumer(app), asyncio.Event(), [], []

        async def commit() -> bool:
            started.append(1)
            await release.wait()
            if len(started) == 2:
                raise RuntimeError("the broker went away")
            return True

        async def crash(exc: BaseException) -> None:
            crashes.append(exc)

        consumer.commit, app.crash = commit, crash
        consumer.commit_in_background()
        consumer.commit_in_background()  # the first is under way: no second one
        await asyncio.sleep(0)
        during = len(started)
        release.set()
        await asyncio.sleep(0)
        consumer.commit_in_background()
        for _ in range(3):
            await asyncio.sleep(0)
        return during, len(started), crashes

    during, total, crashes = asyncio.run(scenario())
    assert during == 1 and total == 2
    assert [str(exc) for exc in crashes] == ["the broker went away"]


class _Positions:
    """The fetcher's side of a hand-over, without a broker: the partition's next offset, the epoch, restarts."""

    def __init__(self, tp: TP, position: int | None) -> None:
        self.epoch, self.restarts, self.fetching = 1, 0, frozenset({tp})
        self._next = {tp: position}

    def next_offset(self, tp: TP) -> int | None:
        return self._next.get(tp)

    def handed_over(self, tp: TP, last_offset: int) -> None:
        self._next[tp] = last_offset + 1

    def highwater(self, tp: TP) -> int:
        return 1_000

    def restart(self) -> None:
        self.epoch += 1
        self.restarts += 1


def _hand_over(offsets: tuple[int, ...], position: int | None, *, stale: bool = False,
               flowing: bool = True) -> tuple[list[int], list[tuple[int, int]], int | None, int]:
    """Fetched messages of input partition 3 at `offsets` handed over from `position`: the offsets that reach the
    inbox, the gaps recorded for the commit, the partition's next position and the fetcher's restarts."""
    settings = load({}, {})
    tp = TP(settings.input_topic, 3)

    async def scenario() -> tuple[list[int], list[tuple[int, int]], int | None, int]:
        app = create_app(settings, SimpleNamespace(model=SimpleNamespace(version="test")))
        await app.topics._update_indices()
        consumer = _consumer(app)
        consumer.fetcher = positions = _Positions(tp, position)
        app.flow_control.resume()
        if flowing:
            consumer.resume_flow()
        else:
            consumer.stop_flow()
        messages = [Inbound(tp.topic, tp.partition, offset, b"c1", b"{}", tp) for offset in offsets]
        await consumer._hand_over({tp: messages}, positions.epoch - 1 if stale else positions.epoch)
        gaps = sorted((gap.begin, gap.end - 1) for gap in consumer._gap[tp])
        return ([m.offset for m in app.transport.inbox._messages], gaps, positions.next_offset(tp),
                positions.restarts)

    return asyncio.run(scenario())


def test_fetched_messages_go_to_the_inbox_and_move_the_partition_s_position():
    assert _hand_over((5, 6, 7), position=5) == ([5, 6, 7], [], 8, 0)
    assert _hand_over((0, 1), position=None) == ([0, 1], [], 2, 0)  # from the partition's beginning


def test_offsets_missing_from_the_log_are_recorded_as_gaps_and_those_handed_over_before_are_dropped():
    assert _hand_over((7, 8, 11), position=5) == ([7, 8, 11], [(5, 6), (9, 10)], 12, 0)
    assert _hand_over((3, 4, 5, 6), position=5) == ([5, 6], [], 7, 0)


def test_messages_fetched_before_a_change_or_while_the_flow_is_off_are_dropped_and_fetched_again():
    assert _hand_over((5, 6), position=5, stale=True) == ([], [], 5, 1)
    assert _hand_over((5, 6), position=5, flowing=False) == ([], [], 5, 1)
