"""Hot swap of what retrieval serves: the creator index, the user tower and the sources built on them.

A `ServingBundle` is immutable and complete: an opened index version, the user tower trained with it,
and the retriever and creator catalogue over them. `BundleSwitch` holds the current bundle; every
request `acquire()`s it for its whole duration (a counted reference), so a request that started on a
bundle finishes on it. `swap()` replaces the reference atomically: new requests get the new bundle at
once, and the old one is closed when its last request releases it (at once if none is running).

`BundleWatcher` polls, off the request path, which version the trainer promoted (the creator index's
CURRENT and the user tower's CURRENT). When the pair changed — and the two belong together, since the
trainer moves the pointers one after the other — it opens and checks the new bundle in its own thread and
only then swaps it in. An index version directory appears complete or not at all (the trainer builds it
under a temporary name and renames it), and a bundle is swapped in only once fully built, so a request
never sees a half-built index. A version that fails to open is logged and retried after `retry_s`; the
current bundle keeps serving meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

from kindred.errors import Unavailable
from retrieval_svc.creators import CreatorCatalogue
from retrieval_svc.retriever import Retriever

log = logging.getLogger(__name__)

VersionKey = tuple[str, str]  # (creator index version, user tower version)
DEFAULT_POLL_S = 5.0


@dataclasses.dataclass(frozen=True)
class ServingBundle:
    index_version: str
    model_version: str
    retriever: Retriever
    creators: CreatorCatalogue
    close: Callable[[], None] = lambda: None  # releases what the bundle opened (the index)

    @property
    def key(self) -> VersionKey:
        return (self.index_version, self.model_version)


@dataclasses.dataclass(eq=False)
class _Slot:
    """A bundle with its reference count; mutated under the switch's lock only."""

    bundle: ServingBundle
    active: int = 0
    retired: bool = False
    closed: bool = False


class BundleSwitch:
    """The current bundle, reference-counted so a retired one closes after its last request."""

    def __init__(self, bundle: ServingBundle) -> None:
        self._lock = threading.Lock()
        self._slot = _Slot(bundle)

    @property
    def current(self) -> ServingBundle:
        return self._slot.bundle

    @contextlib.contextmanager
    def acquire(self) -> Iterator[ServingBundle]:
        """The current bundle, kept open until the block ends even if a swap happens meanwhile."""
        with self._lock:
            slot = self._slot
            if slot.retired:  # only after close(): the server is shutting down
                raise Unavailable("the retrieval service is shutting down")
            slot.active += 1
        try:
            yield slot.bundle
        finally:
            self._release(slot)

    def swap(self, bundle: ServingBundle) -> ServingBundle:
        """Serves `bundle` from now on; returns the previous one (closed once idle)."""
        with self._lock:
            old = self._slot
            if old.retired:
                raise RuntimeError("cannot swap: the switch is closed")
            self._slot = _Slot(bundle)
            old.retired = True
            close_now = self._take_close(old)
        log.info("serving creator index %s with user tower %s", bundle.index_version, bundle.model_version)
        if close_now:
            _close(old.bundle)
        return old.bundle

    def close(self) -> None:
        """Retires the current bundle (no new requests); it closes when its last request ends."""
        with self._lock:
            slot = self._slot
            slot.retired = True
            close_now = self._take_close(slot)
        if close_now:
            _close(slot.bundle)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.active -= 1
            close_now = self._take_close(slot)
        if close_now:
            _close(slot.bundle)

    @staticmethod
    def _take_close(slot: _Slot) -> bool:
        # Under the lock: exactly one caller gets to close a retired, idle bundle.
        if slot.retired and slot.active == 0 and not slot.closed:
            slot.closed = True
            return True
        return False


def _close(bundle: ServingBundle) -> None:
    try:
        bundle.close()
        log.info("closed creator index %s (user tower %s)", bundle.index_version, bundle.model_version)
    except Exception:
        log.warning("closing serving bundle %s failed", bundle.key, exc_info=True)


class NotReady(Exception):
    """The promoted versions are not a consistent pair yet (the trainer is mid-promotion): poll again."""


class BundleWatcher:
    """Polls `probe` every `poll_s`; when it names other versions than the current bundle's, builds them
    with `build` (in this thread) and swaps them in."""

    def __init__(
        self,
        switch: BundleSwitch,
        *,
        probe: Callable[[], VersionKey | None],
        build: Callable[[VersionKey], ServingBundle],
        poll_s: float = DEFAULT_POLL_S,
        retry_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._switch = switch
        self._probe = probe
        self._build = build
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._clock = clock
        self._failed: dict[VersionKey, float] = {}  # key → when building it last failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> BundleWatcher:
        self._thread = threading.Thread(target=self._loop, name="retrieval-bundle-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops polling; waits for a build in progress (a bundle built after this is closed, not served)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def check(self) -> bool:
        """One poll: True if a new bundle was swapped in."""
        try:
            key = self._probe()
        except Exception:
            log.warning("checking for a new model version failed", exc_info=True)
            return False
        if key is None or key == self._switch.current.key:
            return False
        failed_at = self._failed.get(key)
        if failed_at is not None and self._clock() - failed_at < self._retry_s:
            return False
        try:
            bundle = self._build(key)
        except NotReady as exc:
            log.info("not swapping to %s yet: %s", key, exc)
            return False
        except Exception:
            current = self._switch.current.key
            log.exception("cannot serve creator index %s with user tower %s; keeping %s", *key, current)
            self._failed[key] = self._clock()
            return False
        self._failed.pop(key, None)
        try:
            if self._stop.is_set():
                raise RuntimeError("stopped while building")
            self._switch.swap(bundle)
        except RuntimeError:
            _close(bundle)  # shutting down: nobody will serve it
            return False
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.check()
