"""The event log: durable across kill -9, idempotent across reopen, ordered, rotating, thread-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kindred.eventlog import MAGIC, AppendResult, EventLog, EventLogError, read_segment, segment_name
from kindred.v1 import events_pb2


def ev(event_id: str, fan: str = "f1", value: float = 0.0) -> events_pb2.Event:
    e = events_pb2.Event(
        event_id=event_id,
        type=events_pb2.EVENT_TYPE_CREATOR_VIEW,
        fan_id=fan,
        creator_id="c1",
        value=value,
        attributes={"b": "2", "a": "1"},
    )
    e.occurred_at.seconds = 1_700_000_000
    return e


def ids(log: EventLog) -> list[str]:
    return [e.event_id for e in log.read()]


def test_append_then_read_in_order_with_everything_intact(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        assert log.append([ev("a", value=1.5), ev("b"), ev("c")]) == AppendResult(accepted=3, duplicates=0)
        assert log.append([ev("d")]) == AppendResult(1, 0)
        events = list(log.read())
    assert [e.event_id for e in events] == ["a", "b", "c", "d"]
    assert events[0] == ev("a", value=1.5)


def test_duplicates_are_ignored_within_a_batch_and_across_reopen(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        assert log.append([ev("a"), ev("b"), ev("a")]) == AppendResult(accepted=2, duplicates=1)
        assert log.append([ev("b"), ev("c")]) == AppendResult(accepted=1, duplicates=1)
    with EventLog(tmp_path) as log:
        assert "a" in log and "z" not in log
        assert log.append([ev("a"), ev("c"), ev("d")]) == AppendResult(accepted=1, duplicates=2)
        assert log.append([]) == AppendResult(0, 0)
        assert ids(log) == ["a", "b", "c", "d"]


def test_segments_rotate_by_size_and_read_in_append_order(tmp_path: Path) -> None:
    with EventLog(tmp_path, max_segment_bytes=400) as log:
        for batch in range(12):
            log.append([ev(f"e{batch:02d}-{i}") for i in range(3)])
        paths = log.segment_paths()
        assert len(paths) > 3
        assert [p.name for p in paths] == [segment_name(i + 1) for i in range(len(paths))]
        per_segment = [e.event_id for p in paths for e in read_segment(p)]
        assert per_segment == ids(log) == [f"e{b:02d}-{i}" for b in range(12) for i in range(3)]
    with EventLog(tmp_path, max_segment_bytes=400) as log:  # reopening continues the last segment
        log.append([ev("after")])
        assert ids(log)[-1] == "after"


def test_a_torn_tail_is_ignored_by_readers_and_truncated_by_the_next_writer(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append([ev("a"), ev("b")])
        segment = log.segment_paths()[-1]
    intact = segment.stat().st_size
    record = segment.read_bytes()[intact - (intact - len(MAGIC)) // 2 :]  # the last whole record
    with segment.open("ab") as fh:
        fh.write(record[: len(record) - 3])  # a crash in the middle of writing "b" again
    assert [e.event_id for e in read_segment(segment)] == ["a", "b"]
    with EventLog(tmp_path) as log:
        report = log.recover()
        assert report.truncated_bytes == len(record) - 3 and report.events == 2
        assert segment.stat().st_size == intact
        assert log.append([ev("c")]) == AppendResult(1, 0)
        assert ids(log) == ["a", "b", "c"]


def test_a_corrupted_last_record_fails_its_crc_and_is_dropped(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append([ev("a")])
        log.append([ev("b")])
        segment = log.segment_paths()[-1]
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF  # flip bits inside the payload of "b"
    segment.write_bytes(bytes(data))
    with EventLog(tmp_path) as log:
        assert ids(log) == ["a"]
        assert log.append([ev("b")]) == AppendResult(1, 0)  # "b" was never durable, so it is new
        assert ids(log) == ["a", "b"]


def test_a_segment_torn_while_being_created_is_restarted(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append([ev("a")])
    (tmp_path / segment_name(2)).write_bytes(MAGIC[:3])
    with EventLog(tmp_path) as log:
        assert ids(log) == ["a"]
        log.append([ev("b")])
        assert ids(log) == ["a", "b"]
        assert log.segment_paths()[-1].read_bytes().startswith(MAGIC)


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / segment_name(1)).write_bytes(b"not an event log at all")
    with pytest.raises(EventLogError, match="not a Kindred event-log segment"):
        list(EventLog(tmp_path).read())


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with EventLog(tmp_path) as first:
        first.append([ev("a")])
        reader = EventLog(tmp_path)
        assert ids(reader) == ["a"]  # reading needs no lock
        with pytest.raises(EventLogError, match="another writer"):
            reader.append([ev("b")])
    with EventLog(tmp_path) as second:  # released on close
        assert second.append([ev("b")]).accepted == 1


def test_an_event_without_id_is_refused(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log, pytest.raises(ValueError, match="event_id"):
        log.append([ev("a"), events_pb2.Event(fan_id="f1")])
    with EventLog(tmp_path) as log:
        assert ids(log) == []  # nothing of the refused batch was written


def test_concurrent_appends_from_threads_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    n_threads, n_batches, batch = 8, 25, 10
    results: list[AppendResult] = []
    lock = threading.Lock()
    with EventLog(tmp_path, max_segment_bytes=20_000) as log:

        def worker(w: int) -> None:
            for b in range(n_batches):
                # Every id is offered by two threads, so half of the offers are duplicates.
                result = log.append([ev(f"e{(w // 2)}-{b}-{i}") for i in range(batch)])
                with lock:
                    results.append(result)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        written = ids(log)
    unique = n_threads // 2 * n_batches * batch
    assert sum(r.accepted for r in results) == unique == len(written) == len(set(written))
    assert sum(r.duplicates for r in results) == unique
    with EventLog(tmp_path) as log:
        assert log.recover().events == unique


_WRITER = textwrap.dedent(
    """
    import sys
    from kindred.eventlog import EventLog
    from kindred.v1 import events_pb2

    log = EventLog(sys.argv[1], max_segment_bytes=200_000)
    n = 0
    while True:
        batch = []
        for _ in range(50):
            e = events_pb2.Event(event_id=f"k{n:07d}", type=events_pb2.EVENT_TYPE_POST_VIEW, fan_id="f",
                                 post_id="p" * 200)
            e.occurred_at.seconds = 1_700_000_000 + n
            batch.append(e)
            n += 1
        log.append(batch)
        # Acknowledge only after append returned: these ids must survive anything.
        sys.stdout.write(batch[-1].event_id + "\\n")
        sys.stdout.flush()
    """
)


def test_every_acknowledged_event_survives_kill_9(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acked = ""
    try:
        for _ in range(120):  # 6,000 acknowledged events, over several segments
            line = child.stdout.readline()
            assert line, "writer died early"
            acked = line.strip()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    last_acked = int(acked[1:])
    with EventLog(tmp_path) as log:
        report = log.recover()
        survived = ids(log)
        assert len(log.segment_paths()) > 1
        # Everything acknowledged is there, in order, with nothing after a gap.
        assert survived[: last_acked + 1] == [f"k{n:07d}" for n in range(last_acked + 1)]
        assert survived == [f"k{n:07d}" for n in range(len(survived))]
        assert report.events == len(survived)
        assert log.append([ev("k0000000"), ev("new")]) == AppendResult(accepted=1, duplicates=1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(0, 30), max_size=8), max_size=8), st.integers(0, 7))
def test_the_log_holds_each_first_occurrence_in_order(batches: list[list[int]], reopen_after: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        expected: list[str] = []
        log = EventLog(Path(tmp), max_segment_bytes=300)
        for n, batch in enumerate(batches):
            if n == reopen_after:
                log.close()
                log = EventLog(Path(tmp), max_segment_bytes=300)
            fresh = [f"x{i}" for i in dict.fromkeys(batch) if f"x{i}" not in expected]
            result = log.append([ev(f"x{i}") for i in batch])
            assert result == AppendResult(accepted=len(fresh), duplicates=len(batch) - len(fresh))
            expected.extend(fresh)
        assert ids(log) == expected
        log.close()
