"""The event model and the per-user state the stream worker keeps: minute tiles.

An event is ``{event_id, user_id, event_type, event_time}``; ``event_time`` is ISO 8601
(naive means UTC) or epoch seconds. A user's state is the count of events per epoch minute
over the 7 days before the user's newest event, plus what the worker needs to be
idempotent: the newest event time and the ids of the events still inside the allowed
lateness. The windowed features are computed from the tiles at request time by the
``activity_windows`` on-demand view of the Feast repo; :func:`window_counts` is the same rule
written independently, for tests and the benchmark's checks.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.errors import MalformedEvent

MINUTE_MICROS = 60_000_000
WEEK_MINUTES = 7 * 24 * 60
WINDOWS = {"events_1h": 60, "events_24h": 1440, "events_7d": WEEK_MINUTES}
EVENT_FIELDS = ("event_id", "user_id", "event_type", "event_time")
_INT64_MAX = 2**63 - 1
_KEYS = {name: name.encode() for name in EVENT_FIELDS}
# Epoch seconds from 2001 to 2286, so milliseconds or microseconds are refused, not misread.
_EPOCH_RANGE = (1e9, 1e10)
_BIG_ENDIAN = sys.byteorder == "big"  # the book's times are little-endian


@dataclass(frozen=True)
class Event:
    """One valid activity event; ``micros`` is its event time in epoch microseconds."""

    event_id: str
    user_id: int
    event_type: str
    micros: int


def _text(fields: Mapping[Any, Any], name: str) -> str:
    value = fields.get(_KEYS[name])
    if value is None:
        value = fields.get(name)
    if value is None:
        raise MalformedEvent(f"missing field {name}")
    text = value.decode("utf8", "replace") if isinstance(value, bytes) else str(value)
    if not text.strip():
        raise MalformedEvent(f"empty field {name}")
    return text.strip()


def parse_event_time(text: str) -> int:
    """Epoch microseconds of an ISO 8601 time (naive = UTC) or of epoch seconds.

    Raises:
        MalformedEvent: Neither form, or epoch seconds outside 2001-2286 (milliseconds?).
    """
    try:
        seconds = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as error:
            raise MalformedEvent(f"event_time {text!r} is not ISO 8601 or epoch seconds") from error
        aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not math.isfinite(seconds) or not _EPOCH_RANGE[0] <= seconds < _EPOCH_RANGE[1]:
        raise MalformedEvent(f"event_time {text!r} is not epoch seconds between 2001 and 2286")
    return round(seconds * 1_000_000)


def parse_event(fields: Mapping[Any, Any]) -> Event:
    """The event in a stream entry's fields.

    Raises:
        MalformedEvent: A field is missing, empty or unusable (the message says which).
    """
    event_id = _text(fields, "event_id")
    if len(event_id) > 128:
        raise MalformedEvent("event_id longer than 128 characters")
    if "\n" in event_id:
        raise MalformedEvent("event_id holds a line break")
    raw_user = _text(fields, "user_id")
    try:
        user_id = int(raw_user)
    except ValueError as error:
        raise MalformedEvent(f"user_id {raw_user!r} is not an integer") from error
    if not 0 <= user_id <= _INT64_MAX:
        raise MalformedEvent(f"user_id {raw_user} is outside 0..2**63-1")
    return Event(
        event_id=event_id,
        user_id=user_id,
        event_type=_text(fields, "event_type")[:64],
        micros=parse_event_time(_text(fields, "event_time")),
    )


@dataclass
class ParsedEntries:
    """A batch of stream entries as columns (valid events in stream order) and dead letters.

    Attributes:
        positions: Index in the batch of each valid event.
        event_ids, user_ids, micros: The valid events' fields.
        dead: ``(position, reason)`` of each malformed entry.
    """

    positions: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    user_ids: list[int] = field(default_factory=list)
    micros: list[int] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)


def parse_entries(entries: Sequence[Mapping[Any, Any]]) -> ParsedEntries:
    """:func:`parse_event` over a batch of entries' fields, as columns.

    The common shape (bytes fields, a decimal ``user_id``, epoch seconds or ISO 8601) is read
    inline; anything else goes through :func:`parse_event`, which gives the same values or
    the reason the entry is malformed.
    """
    parsed = ParsedEntries()
    event_key, user_key, type_key, time_key = (_KEYS[name] for name in EVENT_FIELDS)
    for position, fields in enumerate(entries):
        try:
            raw_id, raw_user = fields[event_key], fields[user_key]
            raw_type, raw_time = fields[type_key], fields[time_key]
            event_id = raw_id.decode("utf8", "replace").strip()
            if (
                not event_id
                or len(event_id) > 128
                or "\n" in event_id
                or not raw_user.isdigit()
                or len(raw_user) > 18
                or not raw_type.decode("utf8", "replace").strip()
            ):
                raise ValueError(event_id)
            micros = parse_event_time(raw_time.decode("utf8", "replace").strip())
            user_id = int(raw_user)
        except (KeyError, ValueError, AttributeError, TypeError, MalformedEvent):
            try:
                event = parse_event(fields)
            except MalformedEvent as error:
                parsed.dead.append((position, str(error)))
                continue
            event_id, user_id, micros = event.event_id, event.user_id, event.micros
        parsed.positions.append(position)
        parsed.event_ids.append(event_id)
        parsed.user_ids.append(user_id)
        parsed.micros.append(micros)
    return parsed


@dataclass(slots=True)
class UserState:
    """One user's tiles and bookkeeping, as stored online.

    Attributes:
        minutes: Epoch minutes with events, ascending.
        counts: Events per minute.
        stamp: Event time of the stored row (microseconds; 0 when none): strictly
            increasing per user, so Feast's newer-wins accepts every new state.
        newest: Newest applied event time (microseconds; 0 when none).
        seen: Ids of applied events within the allowed lateness of ``newest``.
    """

    minutes: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    stamp: int = 0
    newest: int = 0
    seen: dict[str, int] = field(default_factory=dict)

    def book(self) -> bytes:
        """The bookkeeping field (newest event, recent ids) as stored beside the view.

        ``<newest> <n>``, a line break, the n event times as little-endian int64, then the n
        ids joined by line breaks (the parser refuses ids with one): encoded and decoded in
        C, whatever the number of recent ids of a busy user.
        """
        if not self.seen:
            return b"%d 0\n" % self.newest
        times = array("q", self.seen.values())
        if _BIG_ENDIAN:
            times.byteswap()
        return b"".join(
            (
                b"%d %d\n" % (self.newest, len(self.seen)),
                times.tobytes(),
                "\n".join(self.seen).encode(),
            )
        )

    @classmethod
    def restore(
        cls, minutes: list[int], counts: list[int], stamp: int, book: bytes | None
    ) -> UserState:
        """A state from its stored parts (``book`` None when only Feast wrote the user)."""
        newest, seen = 0, {}
        if book:
            head, _, rest = book.partition(b"\n")
            if b" " in head:
                newest_text, count_text = head.split(b" ")
                newest, count = int(newest_text), int(count_text)
                if count:
                    times = array("q")
                    times.frombytes(rest[: 8 * count])
                    if _BIG_ENDIAN:
                        times.byteswap()
                    seen = dict(zip(rest[8 * count :].decode().split("\n"), times, strict=True))
            else:  # the first format: newest, then one "<event_id> <micros>" line per id
                newest = int(head)
                for pair in rest.split(b"\n") if rest else []:
                    key, _, when = pair.decode().rpartition(" ")
                    seen[key] = int(when)
        if not newest and minutes:  # only Feast wrote the user: the end of its last minute
            newest = (minutes[-1] + 1) * MINUTE_MICROS - 1
        return cls(list(minutes), list(counts), stamp, newest, seen)


@dataclass
class Applied:
    """What applying a user's events did: rows to write offline, events refused.

    ``late`` holds the late events' positions in the sequence given, ``skipped`` those of
    every event not applied (late or duplicate).
    """

    rows: list[tuple[int, list[int], list[int]]] = field(default_factory=list)  # stamp, tiles
    applied: int = 0
    duplicates: int = 0
    late: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def apply_events(state: UserState, events: Iterable[Event], *, lateness_micros: int) -> Applied:
    """:func:`apply_columns` over events (the replay of tests and benchmarks)."""
    listed = list(events)
    return apply_columns(
        state,
        [event.event_id for event in listed],
        [event.micros for event in listed],
        lateness_micros=lateness_micros,
    )


def apply_columns(
    state: UserState, event_ids: Sequence[str], micros: Sequence[int], *, lateness_micros: int
) -> Applied:
    """Apply one user's events (ids and times, in stream order); return the states to record.

    An event already seen is skipped; one older than the newest applied event by more than
    the allowed lateness is refused (late). A state row is recorded after the last event of
    each run of events in one minute, stamped with the newest event time (moved 1 us past
    the previous stamp when a late event did not advance it).
    """
    result = Applied()
    open_minute: int | None = None  # minute of the run of accepted events not yet recorded
    seen, minutes, counts = state.seen, state.minutes, state.counts
    for position, (event_id, when) in enumerate(zip(event_ids, micros, strict=True)):
        if event_id in seen:
            result.duplicates += 1
            result.skipped.append(position)
            continue
        if state.newest and when < state.newest - lateness_micros:
            result.late.append(position)
            result.skipped.append(position)
            continue
        minute = when // MINUTE_MICROS
        if open_minute is not None and minute != open_minute:
            result.rows.append(_record(state))
        open_minute = minute
        seen[event_id] = when
        result.applied += 1
        if minutes and minutes[-1] == minute:  # a live stream: the user's newest minute
            counts[-1] += 1
        elif not minutes or minutes[-1] < minute:
            minutes.append(minute)
            counts.append(1)
        else:
            index = bisect_left(minutes, minute)
            if minutes[index] == minute:
                counts[index] += 1
            else:
                minutes.insert(index, minute)
                counts.insert(index, 1)
        if when > state.newest:
            state.newest = when
    if open_minute is not None:
        result.rows.append(_record(state))
    oldest = state.newest - lateness_micros
    if seen and min(seen.values()) < oldest:
        state.seen = {key: when for key, when in seen.items() if when >= oldest}
    return result


def _record(state: UserState) -> tuple[int, list[int], list[int]]:
    """Prune tiles older than 7 days before the newest event, stamp the state, copy it."""
    cut = bisect_left(state.minutes, state.newest // MINUTE_MICROS - WEEK_MINUTES)
    if cut:
        del state.minutes[:cut], state.counts[:cut]
    state.stamp = max(state.newest, state.stamp + 1)
    return state.stamp, list(state.minutes), list(state.counts)


def window_counts(event_micros: Iterable[int], request_micros: int) -> dict[str, int]:
    """The four features at a request time, straight from event times (the reference).

    Events of the whole minutes before the request's minute count: ``[M - w, M)``.
    """
    now = request_micros // MINUTE_MICROS
    minutes = sorted(m for m in (t // MINUTE_MICROS for t in event_micros) if m < now)
    values = {name: sum(1 for m in minutes if m >= now - width) for name, width in WINDOWS.items()}
    values["minutes_since_last_event"] = (
        min(now - minutes[-1], WEEK_MINUTES) if minutes else (WEEK_MINUTES)
    )
    return values
