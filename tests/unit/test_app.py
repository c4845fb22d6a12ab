"""Worker start-up: local state is trusted only after a clean stop; the changelogs exist before faust needs them."""

import asyncio
import gc
from types import SimpleNamespace

import faust
from faust.types import TP

from streams import topics
from streams.app import (CLEAN_STOP, GC_YOUNG_THRESHOLD, create_app, discard_state_after_crash,
                         settle_garbage_collector)
from streams.consumer import FETCH_MIN_BYTES, readable_offsets
from streams.settings import load
from streams.topics import CONSENT_TABLE, STATE_TABLE


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


def test_the_broker_holds_a_fetch_for_256_kib_up_to_a_quarter_of_the_batch_timeout():
    settings = load({"batch_timeout": "0.08"}, {})
    engine = SimpleNamespace(model=SimpleNamespace(version="test"))

    async def fetch_bounds() -> tuple[int, int]:
        app = create_app(settings, engine)
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms, consumer._fetch_min_bytes
        finally:
            await consumer.stop()
            thread.thread_loop.close()  # the thread's own loop, which only its start would run and close

    assert asyncio.run(fetch_bounds()) == (20, FETCH_MIN_BYTES)  # faust's own: 1,500 ms for 1 byte


def test_the_worker_freezes_its_start_up_heap_and_collects_young_objects_rarely():
    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
