"""The durable, append-only event log: segment files of length-prefixed, CRC-checked protobuf records.

Layout of `<directory>`:

    LOCK                      flock'ed by the one process that appends
    segment-00000001.log      8-byte magic, then records
    segment-00000002.log      ...

A record is `<u32 length><u32 crc32(length bytes + payload)><payload>` (little endian), the payload a
serialized `kindred.v1.Event`. Guarantees:

- Durable: `append` returns only after the records are written and fdatasync'ed, so an acknowledged
  event survives a crash or `kill -9`. A record torn by a crash is caught by its length/CRC check: readers
  stop at it, and the next writer truncates it away before appending.
- Idempotent by `event_id`: an id already in the log (also from before a reopen) is counted as a
  duplicate and not written again.
- Ordered: `read()` yields events in append order; segments rotate once they pass `max_segment_bytes`
  (a batch never straddles two segments).

Readers (the trainer, via `read_segment`, one task per segment) need no lock and never modify files; only
the first `append` (or an explicit `recover()`) takes the writer lock and scans the log.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

from kindred.v1 import events_pb2

log = logging.getLogger(__name__)

MAGIC: Final = b"KEVLOG01"
_HEADER: Final = struct.Struct("<II")  # payload length, crc32
# Far above any real event; a larger length can only be garbage from a torn or corrupt header.
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024
_SEGMENT_RE: Final = re.compile(r"^segment-(\d{8,})\.log$")


class EventLogError(RuntimeError):
    """The log cannot be used as asked: locked by another writer, or not an event log."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    accepted: int  # newly written
    duplicates: int  # event_id already in the log (or earlier in the same batch): ignored


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    segments: int
    events: int
    truncated_bytes: int  # torn tail removed from the last segment


def segment_name(index: int) -> str:
    return f"segment-{index:08d}.log"


def encode_record(payload: bytes) -> bytes:
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload


def _scan(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Yields (end offset, payload) of each intact record after the magic; stops at the first bad one."""
    offset = len(MAGIC)
    while True:
        header = fh.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        length, crc = _HEADER.unpack(header)
        if length > MAX_RECORD_BYTES:
            return
        payload = fh.read(length)
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(header[:4])) != crc:
            return
        offset += _HEADER.size + length
        yield offset, payload


def _check_magic(path: Path, fh: BinaryIO) -> bool:
    """True if the file starts with the magic; False if it is shorter (a segment torn at creation)."""
    head = fh.read(len(MAGIC))
    if head == MAGIC:
        return True
    if len(head) < len(MAGIC) and MAGIC.startswith(head):
        return False
    raise EventLogError(f"{path} is not a Kindred event-log segment")


def read_segment(path: Path) -> Iterator[events_pb2.Event]:
    """Events of one segment in append order, ending silently at a torn tail (used by Ray Data)."""
    with open(path, "rb") as fh:
        if not _check_magic(path, fh):
            return
        for _, payload in _scan(fh):
            event = events_pb2.Event()
            event.ParseFromString(payload)
            yield event


def _segment_index(path: Path) -> int:
    m = _SEGMENT_RE.match(path.name)
    if m is None:
        raise EventLogError(f"{path} is not named like an event-log segment")
    return int(m.group(1))


def _event_id_of(payload: bytes) -> str:
    """The event_id of a serialized Event without a full parse.

    Serializers write known fields in field-number order, so event_id (field 1, tag 0x0A) comes first;
    anything unexpected falls back to parsing.
    """
    if payload and payload[0] == 0x0A:
        length, shift, i = 0, 0, 1
        while i < len(payload):
            b = payload[i]
            i += 1
            length |= (b & 0x7F) << shift
            if b < 0x80:
                return payload[i : i + length].decode("utf-8")
            shift += 7
    event = events_pb2.Event()
    event.ParseFromString(payload)
    return event.event_id


class EventLog:
    """One log directory. Thread-safe; one appending process at a time (enforced by a file lock)."""

    def __init__(self, directory: Path, *, max_segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
            _fsync_dir(self.directory.parent)  # so the log directory itself survives a crash
        self.max_segment_bytes = max_segment_bytes
        self._lock = threading.Lock()
        # Writer state, set up by recover(): the lock fd, the open last segment and the ids seen.
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment_index = 0
        self._size = 0
        self._ids: set[str] = set()
        self._closed = False

    # --- reading ---
    def segment_paths(self) -> list[Path]:
        """The segment files in append order."""
        found = []
        for path in self.directory.iterdir():
            m = _SEGMENT_RE.match(path.name)
            if m:
                found.append((int(m.group(1)), path))
        return [p for _, p in sorted(found)]

    def read(self) -> Iterator[events_pb2.Event]:
        """All intact events in append order (a snapshot of the segments present when called)."""
        for path in self.segment_paths():
            yield from read_segment(path)

    # --- writing ---
    def recover(self) -> RecoveryReport:
        """Takes the writer lock, indexes the ids in the log and truncates a torn tail.

        `append` does this on first use; a server calls it at start-up so its first request is not slow.
        """
        with self._lock:
            return self._recover_locked()

    def _recover_locked(self) -> RecoveryReport:
        if self._closed:
            raise EventLogError(f"event log {self.directory} is closed")
        if self._fd is not None:
            return RecoveryReport(
                segments=len(self.segment_paths()), events=len(self._ids), truncated_bytes=0
            )
        lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(lock_fd)
            raise EventLogError(f"event log {self.directory} is being appended to by another writer") from exc
        try:
            report = self._index_and_open()
        except BaseException:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        return report

    def _index_and_open(self) -> RecoveryReport:
        ids: set[str] = set()
        paths = self.segment_paths()
        valid_end = len(MAGIC)
        for position, path in enumerate(paths):
            with open(path, "rb") as fh:
                has_magic = _check_magic(path, fh)
                end = len(MAGIC) if has_magic else 0
                if has_magic:
                    for record_end, payload in _scan(fh):
                        ids.add(_event_id_of(payload))
                        end = record_end
            if position < len(paths) - 1 and end != path.stat().st_size:
                # Only the last segment can be torn by a crash; damage elsewhere is worth a loud warning.
                log.warning("event log segment %s is damaged after byte %d; later records skipped", path, end)
            valid_end = end
        truncated = 0
        if paths:
            last = paths[-1]
            self._segment_index = _segment_index(last)
            fd = os.open(last, os.O_RDWR)
            size = os.fstat(fd).st_size
            if valid_end < len(MAGIC):  # the crash tore the magic itself: start the segment afresh
                os.ftruncate(fd, 0)
                os.pwrite(fd, MAGIC, 0)
                truncated, valid_end = size, len(MAGIC)
                os.fsync(fd)
            elif size > valid_end:
                log.warning("event log %s: dropping %d bytes of torn tail", last, size - valid_end)
                os.ftruncate(fd, valid_end)
                os.fsync(fd)
                truncated = size - valid_end
            os.lseek(fd, valid_end, os.SEEK_SET)
            self._fd, self._size = fd, valid_end
        else:
            self._open_new_segment(1)
        self._ids = ids
        return RecoveryReport(segments=max(len(paths), 1), events=len(ids), truncated_bytes=truncated)

    def _open_new_segment(self, index: int) -> None:
        path = self.directory / segment_name(index)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, MAGIC)
        os.fsync(fd)
        # The new directory entry must be durable too, or a crash could lose the whole segment.
        _fsync_dir(self.directory)
        self._fd, self._segment_index, self._size = fd, index, len(MAGIC)

    def append(self, events: Sequence[events_pb2.Event]) -> AppendResult:
        """Durably appends the events whose ids are new; returns once they are on disk."""
        encoded: list[bytes] = []
        new_ids: list[str] = []
        with self._lock:
            self._recover_locked()
            assert self._fd is not None
            batch_ids: set[str] = set()
            duplicates = 0
            for event in events:
                event_id = event.event_id
                if not event_id:
                    raise ValueError("every event needs an event_id (the idempotency key)")
                if event_id in self._ids or event_id in batch_ids:
                    duplicates += 1
                    continue
                batch_ids.add(event_id)
                new_ids.append(event_id)
                # deterministic=True: map fields in a stable order, so the same events give the same bytes.
                encoded.append(encode_record(event.SerializeToString(deterministic=True)))
            if not encoded:
                return AppendResult(accepted=0, duplicates=duplicates)
            if self._size >= self.max_segment_bytes:
                self._rotate()
            data = b"".join(encoded)
            start = self._size
            try:
                _write_all(self._fd, data)
                os.fdatasync(self._fd)
            except BaseException:
                # Leave no partial batch behind: the caller sees the error and will retry the whole batch.
                try:
                    os.ftruncate(self._fd, start)
                    os.lseek(self._fd, start, os.SEEK_SET)
                except OSError:
                    log.exception("event log: could not roll back a failed append")
                raise
            self._size = start + len(data)
            self._ids.update(new_ids)
            return AppendResult(accepted=len(new_ids), duplicates=duplicates)

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        self._open_new_segment(self._segment_index + 1)

    def __contains__(self, event_id: object) -> bool:
        """Whether the log holds `event_id` (takes the writer role, like `append`)."""
        with self._lock:
            self._recover_locked()
            return event_id in self._ids

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None
            self._ids = set()
            self._closed = True

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
