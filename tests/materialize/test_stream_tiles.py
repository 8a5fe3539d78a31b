"""The stream's event model and per-user tiles, in process."""

from __future__ import annotations

import pytest

from materialize.stream.tiles import (
    MINUTE_MICROS,
    WEEK_MINUTES,
    Event,
    MalformedEvent,
    UserState,
    apply_events,
    parse_entries,
    parse_event,
    window_counts,
)

pytestmark = pytest.mark.unit

T0 = 1_793_000_000 * 1_000_000  # epoch microseconds, 2026-10


def _event(name: str, seconds: float) -> Event:
    return Event(event_id=name, user_id=1, event_type="login", micros=T0 + int(seconds * 1e6))


def test_event_time_is_iso_or_epoch_seconds() -> None:
    iso = parse_event(
        {
            b"event_id": b"a",
            b"user_id": b"7",
            b"event_type": b"x",
            b"event_time": b"2026-11-02T09:00:00Z",
        }
    )
    epoch = parse_event(
        {"event_id": "b", "user_id": "7", "event_type": "x", "event_time": "1793610000"}
    )
    naive = parse_event(
        {"event_id": "c", "user_id": "7", "event_type": "x", "event_time": "2026-11-02T09:00:00"}
    )

    assert iso.micros == naive.micros == 1_793_610_000 * 1_000_000
    assert epoch.micros == 1_793_610_000 * 1_000_000
    assert iso.user_id == 7


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"user_id": "1", "event_type": "x", "event_time": "1793610000"}, "missing field event_id"),
        (
            {"event_id": "a", "user_id": "-1", "event_type": "x", "event_time": "1793610000"},
            "user_id -1 is outside 0..2**63-1",
        ),
        (
            {"event_id": "a", "user_id": "1", "event_type": "x", "event_time": "1793610000000"},
            "event_time '1793610000000' is not epoch seconds between 2001 and 2286",
        ),
        (
            {"event_id": "a", "user_id": "1", "event_type": " ", "event_time": "1793610000"},
            "empty field event_type",
        ),
    ],
)
def test_malformed_events_name_their_problem(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason.replace("*", r"\*").replace("(", r"\(")):
        parse_event(fields)


def test_duplicates_and_late_events_are_refused_and_stamps_always_increase() -> None:
    state = UserState()
    first = apply_events(
        state, [_event("a", 0), _event("b", 30), _event("c", 90)], lateness_micros=60 * 1_000_000
    )
    again = apply_events(
        state, [_event("b", 30), _event("d", 40), _event("e", 10)], lateness_micros=60 * 1_000_000
    )

    assert first.applied == 3 and [row[0] for row in first.rows] == [
        T0 + 30_000_000,
        T0 + 90_000_000,
    ]
    assert again.duplicates == 1 and again.late == [2]  # positions: "e"
    # d is 50 s behind the newest event: applied, and stamped just after the last stamp
    assert again.applied == 1 and again.rows[0][0] == T0 + 90_000_001
    assert sum(state.counts) == 4
    restored = UserState.restore(state.minutes, state.counts, state.stamp, state.book())
    assert restored == state


def test_tiles_older_than_a_week_before_the_newest_event_are_pruned() -> None:
    state = UserState()
    apply_events(state, [_event("a", 0), _event("b", (WEEK_MINUTES + 5) * 60)], lateness_micros=0)

    assert state.minutes == [(T0 + (WEEK_MINUTES + 5) * 60 * 1_000_000) // MINUTE_MICROS]


def test_windows_count_whole_minutes_before_the_request_minute() -> None:
    minute = 60 * 1_000_000
    events = [T0, T0 + 10 * minute, T0 + 70 * minute]
    at = T0 + 70 * minute + 5_000_000  # inside the minute of the last event

    assert window_counts(events, at) == {
        "events_1h": 1,  # the event at +10 min; the one in the current minute waits
        "events_24h": 2,
        "events_7d": 2,
        "minutes_since_last_event": 60,
    }


def test_a_batch_parsed_as_columns_matches_parse_event_entry_by_entry() -> None:
    entries = [
        {b"event_id": b"a", b"user_id": b"7", b"event_type": b"x", b"event_time": b"1793610000.5"},
        {b"event_id": b" b ", b"user_id": b"8", b"event_type": b"x", b"event_time": b"2026-11-02Z"},
        {b"event_id": b"c", b"user_id": b" 9", b"event_type": b"x", b"event_time": b"1793610000"},
        {b"event_id": b"d", b"user_id": b"1_0", b"event_type": b"x", b"event_time": b"1793610000"},
        {b"event_id": b"e", b"user_id": b"x", b"event_type": b"x", b"event_time": b"1793610000"},
        {b"event_id": b"f", b"user_id": b"7", b"event_type": b"\xc2\xa0", b"event_time": b"1"},
        {b"event_id": b"g", b"user_id": b"7", b"event_type": b"x", b"event_time": b"soon"},
        {b"user_id": b"7", b"event_type": b"x", b"event_time": b"1793610000"},
        {"event_id": "h", "user_id": "7", "event_type": "x", "event_time": "1793610000"},
        {b"event_id": b"i", b"user_id": b"9" * 19, b"event_type": b"x", b"event_time": b"2e9"},
        {b"event_id": b"j\nk", b"user_id": b"7", b"event_type": b"x", b"event_time": b"2e9"},
    ]
    expected_events, expected_dead = [], []
    for position, fields in enumerate(entries):
        try:
            expected_events.append((position, parse_event(fields)))
        except MalformedEvent as error:
            expected_dead.append((position, str(error)))

    parsed = parse_entries(entries)

    assert parsed.dead == expected_dead and len(expected_dead) == 6
    assert list(
        zip(parsed.positions, parsed.event_ids, parsed.user_ids, parsed.micros, strict=True)
    ) == [(p, e.event_id, e.user_id, e.micros) for p, e in expected_events]


def test_bookkeeping_round_trips_and_reads_the_first_format() -> None:
    state = UserState(minutes=[5], counts=[2], stamp=9, newest=T0)
    state.seen = {f"id {i}": T0 - i for i in range(3000)}  # a busy user, ids with spaces

    assert UserState.restore([5], [2], 9, state.book()) == state
    assert UserState.restore([5], [2], 9, b"%d\nx y %d\nz %d" % (T0, T0 - 1, T0)).seen == {
        "x y": T0 - 1,
        "z": T0,
    }
    assert UserState.restore([], [], 0, UserState(newest=T0).book()) == UserState(newest=T0)
