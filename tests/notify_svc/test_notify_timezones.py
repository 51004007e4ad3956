"""Quiet hours and digest times in the fan's zone, checked around real DST transitions."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kindred.errors import InvalidArgument
from notify_svc import timezones as tz

NY = tz.resolve_zone("America/New_York")
LONDON = tz.resolve_zone("Europe/London")

# (zone, a DST transition in it): spring forward and fall back in New York and London (2024, 2025),
# Lord Howe's half-hour shift, and zones without DST as controls.
ZONE_TRANSITIONS = [
    ("America/New_York", datetime(2024, 3, 10, 7, tzinfo=UTC)),
    ("America/New_York", datetime(2024, 11, 3, 6, tzinfo=UTC)),
    ("America/New_York", datetime(2025, 3, 9, 7, tzinfo=UTC)),
    ("America/New_York", datetime(2025, 11, 2, 6, tzinfo=UTC)),
    ("Europe/London", datetime(2024, 3, 31, 1, tzinfo=UTC)),
    ("Europe/London", datetime(2024, 10, 27, 1, tzinfo=UTC)),
    ("Europe/London", datetime(2025, 3, 30, 1, tzinfo=UTC)),
    ("Europe/London", datetime(2025, 10, 26, 1, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2024, 4, 6, 15, tzinfo=UTC)),
    ("Asia/Kolkata", datetime(2024, 3, 10, 7, tzinfo=UTC)),
    ("UTC", datetime(2024, 3, 31, 1, tzinfo=UTC)),
]


def wall_times() -> st.SearchStrategy[time]:
    # Quarter hours, half of them between 00:00 and 03:00 so that windows starting or ending inside a
    # DST gap or a repeated hour (01:00-03:00 local in New York and London) come up often.
    return st.builds(time, st.one_of(st.integers(0, 23), st.integers(0, 2)), st.sampled_from([0, 15, 30, 45]))


@st.composite
def zoned_instants(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant within a day and a half before to half a day after one of its transitions."""
    zone, transition = draw(st.sampled_from(ZONE_TRANSITIONS))
    return zone, transition + timedelta(minutes=draw(st.integers(-36 * 60, 12 * 60)))


@pytest.mark.parametrize(
    ("instant", "zone", "expected"),
    [
        # 23:00 EST on the eve of spring forward: quiet ends at 08:00 EDT = 12:00Z, not 13:00Z.
        (datetime(2024, 3, 10, 4, tzinfo=UTC), NY, datetime(2024, 3, 10, 12, tzinfo=UTC)),
        # The eve of fall back: 08:00 EST = 13:00Z.
        (datetime(2024, 11, 3, 3, tzinfo=UTC), NY, datetime(2024, 11, 3, 13, tzinfo=UTC)),
        # London spring forward: 08:00 BST = 07:00Z.
        (datetime(2024, 3, 30, 23, tzinfo=UTC), LONDON, datetime(2024, 3, 31, 7, tzinfo=UTC)),
        # London fall back: 08:00 GMT = 08:00Z.
        (datetime(2024, 10, 26, 23, tzinfo=UTC), LONDON, datetime(2024, 10, 27, 8, tzinfo=UTC)),
        # Early-morning part of the window: 05:00 EDT → 08:00 EDT the same day.
        (datetime(2024, 6, 3, 9, tzinfo=UTC), NY, datetime(2024, 6, 3, 12, tzinfo=UTC)),
    ],
)
def test_quiet_window_ends_at_local_end_time_across_dst(
    instant: datetime, zone: object, expected: datetime
) -> None:
    assert tz.quiet_end(instant, zone, time(22), time(8)) == expected  # type: ignore[arg-type]


def test_not_quiet_returns_the_instant_itself() -> None:
    noon = datetime(2024, 6, 3, 16, tzinfo=UTC)  # 12:00 EDT
    assert tz.quiet_end(noon, NY, time(22), time(8)) == noon


def test_end_inside_a_dst_gap_is_the_transition_instant() -> None:
    # 02:30 does not exist in New York on 2024-03-10; the clock jumps 02:00 EST → 03:00 EDT at 07:00Z.
    assert tz.first_instant_at(date(2024, 3, 10), time(2, 30), NY) == datetime(2024, 3, 10, 7, tzinfo=UTC)
    assert tz.quiet_end(datetime(2024, 3, 10, 5, tzinfo=UTC), NY, time(22), time(2, 30)) == datetime(
        2024, 3, 10, 7, tzinfo=UTC
    )


def test_end_inside_a_repeated_hour_is_its_first_occurrence() -> None:
    # 01:30 happens twice in New York on 2024-11-03: first at 05:30Z (EDT), again at 06:30Z (EST).
    assert tz.first_instant_at(date(2024, 11, 3), time(1, 30), NY) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("instant", "zone", "start", "end", "expected"),
    [
        # Fall back, second pass through 01:00-02:00: quiet until 01:15 *EST* (06:15Z), not tomorrow.
        (
            datetime(2024, 11, 3, 6, 0, tzinfo=UTC),
            NY,
            time(0),
            time(1, 15),
            datetime(2024, 11, 3, 6, 15, tzinfo=UTC),
        ),
        # The fall-back jump itself leaves the window: 01:59 EDT → 01:00 EST, outside [01:30, 05:00).
        (
            datetime(2024, 11, 3, 5, 45, tzinfo=UTC),
            NY,
            time(1, 30),
            time(5),
            datetime(2024, 11, 3, 6, 0, tzinfo=UTC),
        ),
        # Spring forward skips the only non-quiet quarter hour [01:00, 01:15) in London: quiet a day longer.
        (
            datetime(2024, 3, 30, 23, tzinfo=UTC),
            LONDON,
            time(1, 15),
            time(1),
            datetime(2024, 4, 1, 0, tzinfo=UTC),
        ),
    ],
)
def test_quiet_window_edge_cases_at_transitions(
    instant: datetime, zone: object, start: time, end: time, expected: datetime
) -> None:
    assert tz.quiet_end(instant, zone, start, end) == expected  # type: ignore[arg-type]


def test_digest_time_is_the_next_local_wall_time() -> None:
    # 18:00 London is 17:00Z in summer; asked at 17:00Z exactly, the next one is tomorrow's.
    at = datetime(2024, 6, 3, 17, tzinfo=UTC)
    assert tz.next_wall_time(at - timedelta(seconds=1), LONDON, time(18)) == at
    assert tz.next_wall_time(at, LONDON, time(18)) == at + timedelta(days=1)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "../../etc/passwd", "/etc/localtime", "America/"])
def test_unknown_zones_are_invalid_argument_naming_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        tz.resolve_zone(name)
    assert info.value.field == "candidate.fan_time_zone"


@settings(max_examples=300, deadline=None)
@given(at=zoned_instants(), start=wall_times(), end=wall_times())
def test_quiet_end_is_the_earliest_non_quiet_instant(
    at: tuple[str, datetime], start: time, end: time
) -> None:
    zone, instant = tz.resolve_zone(at[0]), at[1]
    out = tz.quiet_end(instant, zone, start, end)
    assert out >= instant
    assert not tz.is_quiet(out, zone, start, end)
    # Earliest: every instant before it (sampled each 5 minutes, and one second before) is quiet.
    probe = instant
    while probe < out:
        assert tz.is_quiet(probe, zone, start, end), (probe, out)
        probe += timedelta(minutes=5)
    if out > instant:
        assert tz.is_quiet(max(instant, out - timedelta(seconds=1)), zone, start, end)
    # Under a day, plus up to a day when a DST jump skips the only non-quiet slot of a nearly full-day window.
    assert out - instant <= timedelta(hours=49)


@settings(max_examples=300, deadline=None)
@given(at=zoned_instants(), wall=wall_times())
def test_next_wall_time_reads_that_time_locally(at: tuple[str, datetime], wall: time) -> None:
    zone, instant = tz.resolve_zone(at[0]), at[1]
    out = tz.next_wall_time(instant, zone, wall)
    assert instant < out <= instant + timedelta(hours=26)
    local = tz.local_wall(out, zone)
    target = datetime.combine(local.date(), wall)
    if local == target:
        return
    # Only a DST gap may move it: then `out` is the transition, the first instant past `wall`.
    assert local > target
    assert tz.local_wall(out - timedelta(seconds=1), zone) < target
