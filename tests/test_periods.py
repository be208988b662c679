"""Budget periods (SPEC §6): windows that reset at local midnight and tile time exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.money.periods import EPOCH, Period, Window, describe_reset, window

TICK = timedelta(microseconds=1)
BERLIN = ZoneInfo("Europe/Berlin")
LONDON = ZoneInfo("Europe/London")
UTC_ZONE = ZoneInfo("UTC")
# Zones with awkward histories: midnight jumps (Sao Paulo, Toronto 1919), a skipped day (Apia
# 2011), a fall-back just after midnight (St John's until 2010), half-hour DST (Lord Howe),
# odd offsets (Kathmandu, Chatham) and both hemispheres.
ZONES = [
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "America/St_Johns",
    "America/Toronto",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Apia",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Antarctica/Casey",
]
PERIODIC = [Period.DAILY, Period.WEEKLY, Period.MONTHLY]

PROPERTY = settings(max_examples=300, deadline=None)
instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
zones = st.sampled_from(ZONES).map(ZoneInfo)


def local(moment: datetime, tz: ZoneInfo) -> datetime:
    """``moment`` on the wall clock of ``tz``, without the zone, for easy comparison."""
    return moment.astimezone(tz).replace(tzinfo=None)


def at(
    tz: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    """A wall-clock time in ``tz``; ``fold=1`` picks the second of a repeated time."""
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz, fold=fold)


def test_period_values_are_the_command_words() -> None:
    assert [str(period) for period in Period] == ["daily", "weekly", "monthly", "total"]
    assert Period("weekly") is Period.WEEKLY


@pytest.mark.parametrize(
    ("period", "reset", "previous_start", "next_end"),
    [
        (
            Period.DAILY,
            datetime(2025, 3, 11, tzinfo=UTC),
            datetime(2025, 3, 10, tzinfo=UTC),
            datetime(2025, 3, 12, tzinfo=UTC),
        ),
        (
            Period.WEEKLY,
            datetime(2025, 3, 10, tzinfo=UTC),
            datetime(2025, 3, 3, tzinfo=UTC),
            datetime(2025, 3, 17, tzinfo=UTC),
        ),
        (
            Period.MONTHLY,
            datetime(2025, 3, 1, tzinfo=UTC),
            datetime(2025, 2, 1, tzinfo=UTC),
            datetime(2025, 4, 1, tzinfo=UTC),
        ),
    ],
)
def test_the_instants_around_a_reset(
    period: Period, reset: datetime, previous_start: datetime, next_end: datetime
) -> None:
    before = window(period, reset - TICK, UTC_ZONE)
    assert before == Window(previous_start, reset)
    assert window(period, reset, UTC_ZONE) == Window(reset, next_end)
    assert window(period, reset + TICK, UTC_ZONE) == Window(reset, next_end)


def test_windows_are_in_utc_and_reset_at_local_midnight() -> None:
    now = datetime(2025, 7, 15, 22, 30, tzinfo=UTC)  # already the 16th in Berlin (UTC+2)
    daily = window(Period.DAILY, now, BERLIN)
    assert daily == Window(
        datetime(2025, 7, 15, 22, tzinfo=UTC), datetime(2025, 7, 16, 22, tzinfo=UTC)
    )
    assert daily.start.tzinfo is UTC
    assert daily.end is not None
    assert daily.end.tzinfo is UTC


def test_now_may_be_given_in_any_zone() -> None:
    in_utc = datetime(2025, 7, 15, 21, 30, tzinfo=UTC)
    in_tokyo = in_utc.astimezone(ZoneInfo("Asia/Tokyo"))
    for period in Period:
        assert window(period, in_tokyo, BERLIN) == window(period, in_utc, BERLIN)


def test_weeks_start_on_monday_across_a_year_end() -> None:
    sunday = at(BERLIN, 2025, 12, 28, 23, 59, 59, 999999)
    monday = at(BERLIN, 2025, 12, 29)
    assert local(window(Period.WEEKLY, sunday, BERLIN).start, BERLIN) == datetime(2025, 12, 22)
    new_year = window(Period.WEEKLY, monday, BERLIN)
    assert new_year.start == monday
    assert new_year.end == at(BERLIN, 2026, 1, 5)
    assert new_year.contains(at(BERLIN, 2026, 1, 1, 12))


def test_a_week_starting_in_one_year_and_ending_in_the_next() -> None:
    # 2026-01-01 is a Thursday: its week began on Monday 2025-12-29.
    thursday = window(Period.WEEKLY, datetime(2026, 1, 1, 12, tzinfo=UTC), UTC_ZONE)
    assert thursday == Window(datetime(2025, 12, 29, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC))


@pytest.mark.parametrize(
    ("month", "days"),
    [
        (date(2023, 2, 1), 28),
        (date(2024, 2, 1), 29),
        (date(2100, 2, 1), 28),
        (date(2000, 2, 1), 29),
        (date(2025, 4, 1), 30),
        (date(2025, 1, 1), 31),
        (date(2025, 12, 1), 31),
    ],
)
def test_months_have_their_own_lengths(month: date, days: int) -> None:
    last_moment = datetime(month.year, month.month, days, 23, 59, 59, 999999, tzinfo=UTC)
    span = window(Period.MONTHLY, last_moment, UTC_ZONE)
    assert span.start == datetime(month.year, month.month, 1, tzinfo=UTC)
    assert span.end == span.start + timedelta(days=days)


def test_december_rolls_over_to_january() -> None:
    span = window(Period.MONTHLY, at(BERLIN, 2025, 12, 31, 23, 59), BERLIN)
    assert span == Window(at(BERLIN, 2025, 12, 1), at(BERLIN, 2026, 1, 1))


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/London", date(2024, 3, 31), 23),
        ("Europe/London", date(2024, 10, 27), 25),
        ("Europe/Berlin", date(2025, 3, 30), 23),
        ("America/New_York", date(2025, 11, 2), 25),
        ("Australia/Lord_Howe", date(2024, 4, 7), 24.5),  # falls back half an hour
        ("Australia/Lord_Howe", date(2024, 10, 6), 23.5),
        ("America/Sao_Paulo", date(2018, 2, 17), 25),  # 00:00 on the 18th fell back to 23:00
        ("America/Sao_Paulo", date(2018, 11, 4), 23),  # 00:00 jumped to 01:00
        ("Europe/London", date(2024, 6, 1), 24),
    ],
)
def test_a_local_day_around_a_clock_change(zone: str, day: date, hours: float) -> None:
    tz = ZoneInfo(zone)
    span = window(Period.DAILY, at(tz, day.year, day.month, day.day, 12), tz)
    assert span.end is not None
    assert span.end - span.start == timedelta(hours=hours)
    assert local(span.start, tz).date() == day


def test_a_skipped_midnight_starts_the_day_when_the_clock_jumps() -> None:
    tz = ZoneInfo("America/Sao_Paulo")
    span = window(Period.DAILY, at(tz, 2018, 11, 4, 12), tz)
    assert local(span.start, tz) == datetime(2018, 11, 4, 1)
    assert local(span.start - TICK, tz) == datetime(2018, 11, 3, 23, 59, 59, 999999)
    assert window(Period.DAILY, span.start - TICK, tz).end == span.start


def test_a_jump_across_midnight_starts_the_day_where_the_clock_lands() -> None:
    # Toronto, 1919-03-30: at 23:30 the clocks went forward to 00:30 on the 31st.
    tz = ZoneInfo("America/Toronto")
    span = window(Period.DAILY, at(tz, 1919, 3, 31, 12), tz)
    assert local(span.start, tz) == datetime(1919, 3, 31, 0, 30)
    assert local(span.start - TICK, tz) == datetime(1919, 3, 30, 23, 29, 59, 999999)
    assert span.end is not None
    assert span.end - span.start == timedelta(hours=23, minutes=30)


def test_a_day_missing_from_the_calendar_leaves_no_empty_window() -> None:
    # Samoa skipped 2011-12-30, going from the 29th straight to the 31st.
    tz = ZoneInfo("Pacific/Apia")
    thursday = window(Period.DAILY, at(tz, 2011, 12, 29, 12), tz)
    saturday = window(Period.DAILY, at(tz, 2011, 12, 31, 12), tz)
    assert thursday.end == saturday.start
    assert local(saturday.start, tz) == datetime(2011, 12, 31)
    week = window(Period.WEEKLY, at(tz, 2011, 12, 31, 12), tz)
    assert week.end is not None
    assert week.end - week.start == timedelta(days=6)


def test_a_repeated_hour_after_midnight_belongs_to_the_new_day() -> None:
    # St John's fell back at 00:01, so the clock read 23:01-23:59 of the old day once more.
    tz = ZoneInfo("America/St_Johns")
    # In UTC, because Python compares wall clocks within one zone and refuses to call an
    # ambiguous time equal to anything in another.
    first_midnight = at(tz, 2009, 11, 1).astimezone(UTC)
    repeated = at(tz, 2009, 10, 31, 23, 30, fold=1).astimezone(UTC)
    assert repeated > first_midnight
    assert local(repeated, tz) == datetime(2009, 10, 31, 23, 30)
    span = window(Period.DAILY, repeated, tz)
    assert span.start == first_midnight
    assert span.contains(repeated)
    assert window(Period.DAILY, first_midnight - TICK, tz).end == first_midnight


def test_an_ambiguous_midnight_resets_at_its_first_occurrence() -> None:
    # Sao Paulo, 2018-02-18 00:00 fell back to 23:00 on the 17th: the 17th lasts 25 hours and
    # its repeated last hour still belongs to it.
    tz = ZoneInfo("America/Sao_Paulo")
    second_eleven_pm = at(tz, 2018, 2, 17, 23, 30, fold=1)
    span = window(Period.DAILY, second_eleven_pm, tz)
    assert span.end == at(tz, 2018, 2, 18)
    assert local(span.start, tz) == datetime(2018, 2, 17)


def test_a_week_and_a_month_spanning_a_clock_change() -> None:
    week = window(Period.WEEKLY, at(BERLIN, 2025, 3, 27), BERLIN)
    assert week.end is not None
    assert week.end - week.start == timedelta(days=7, hours=-1)
    month = window(Period.MONTHLY, at(BERLIN, 2025, 10, 15), BERLIN)
    assert month.end is not None
    assert month.end - month.start == timedelta(days=31, hours=1)


def test_total_starts_at_the_epoch_and_never_ends() -> None:
    span = window(Period.TOTAL, datetime(2025, 1, 1, tzinfo=UTC), BERLIN)
    assert span == Window(EPOCH, None)
    assert span.contains(datetime(2999, 1, 1, tzinfo=UTC))
    assert not span.contains(EPOCH - TICK)


def test_contains_is_half_open() -> None:
    span = Window(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))
    assert span.contains(datetime(2025, 1, 1, tzinfo=UTC))
    assert span.contains(datetime(2025, 1, 2, tzinfo=UTC) - TICK)
    assert not span.contains(datetime(2025, 1, 2, tzinfo=UTC))
    assert not span.contains(datetime(2025, 1, 1, tzinfo=UTC) - TICK)
    assert span.contains(at(BERLIN, 2025, 1, 1, 12))


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(ValueError, match="now must be a timezone-aware"):
        window(Period.DAILY, naive, BERLIN)
    with pytest.raises(ValueError, match="moment must be a timezone-aware"):
        Window(EPOCH, None).contains(naive)
    with pytest.raises(ValueError, match="start must be a timezone-aware"):
        Window(naive, None)


def test_a_window_is_kept_in_utc() -> None:
    span = Window(at(BERLIN, 2025, 1, 1), at(BERLIN, 2025, 1, 2))
    assert span.start == datetime(2024, 12, 31, 23, tzinfo=UTC)
    assert span.start.tzinfo is UTC
    assert span.end is not None
    assert span.end.tzinfo is UTC


def test_a_window_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        Window(EPOCH, EPOCH)


@pytest.mark.parametrize(
    ("period", "now", "zone", "expected"),
    [
        (
            Period.DAILY,
            datetime(2025, 11, 28, 20, 48, tzinfo=UTC),
            "UTC",
            "resets at 00:00 UTC (in 3 h 12 min)",
        ),
        (
            Period.WEEKLY,
            datetime(2025, 11, 28, 12, tzinfo=UTC),
            "Europe/Berlin",
            "resets on Mon 1 Dec at 00:00 Europe/Berlin (in 2 days)",
        ),
        (
            Period.MONTHLY,
            datetime(2025, 2, 1, tzinfo=UTC),
            "UTC",
            "resets on Sat 1 Mar at 00:00 UTC (in 28 days)",
        ),
        (
            Period.DAILY,
            datetime(2025, 11, 28, 23, tzinfo=UTC),
            "UTC",
            "resets at 00:00 UTC (in 1 h)",
        ),
        (
            Period.DAILY,
            datetime(2025, 11, 28, 23, 59, 59, tzinfo=UTC),
            "UTC",
            "resets at 00:00 UTC (in 1 min)",
        ),
        (
            Period.DAILY,
            datetime(2025, 11, 28, 23, 45, tzinfo=UTC),
            "UTC",
            "resets at 00:00 UTC (in 15 min)",
        ),
        (
            Period.WEEKLY,
            datetime(2025, 11, 30, 23, 59, tzinfo=UTC),
            "UTC",
            "resets at 00:00 UTC (in 1 min)",
        ),
        (
            Period.WEEKLY,
            datetime(2025, 11, 30, tzinfo=UTC),
            "UTC",
            "resets on Mon 1 Dec at 00:00 UTC (in 1 day)",
        ),
        (
            Period.DAILY,
            datetime(2018, 11, 3, 20, tzinfo=UTC),
            "America/Sao_Paulo",
            "resets at 01:00 America/Sao_Paulo (in 7 h)",
        ),
        (Period.TOTAL, datetime(2025, 11, 28, tzinfo=UTC), "UTC", "never resets"),
    ],
)
def test_describe_reset(period: Period, now: datetime, zone: str, expected: str) -> None:
    tz = ZoneInfo(zone)
    assert describe_reset(window(period, now, tz), now, tz) == expected


def test_describe_reset_of_a_window_that_has_already_ended() -> None:
    span = window(Period.DAILY, datetime(2025, 1, 1, tzinfo=UTC), UTC_ZONE)
    assert span.end is not None
    assert describe_reset(span, span.end, UTC_ZONE) == "resets at 00:00 UTC (now)"


def test_describe_reset_shows_the_reset_in_the_given_zone() -> None:
    now = datetime(2025, 11, 28, 20, tzinfo=UTC)
    span = window(Period.DAILY, now, UTC_ZONE)
    assert describe_reset(span, now, BERLIN) == "resets at 01:00 Europe/Berlin (in 4 h)"


@PROPERTY
@given(period=st.sampled_from(list(Period)), now=instants, tz=zones)
def test_the_window_always_holds_now(period: Period, now: datetime, tz: ZoneInfo) -> None:
    assert window(period, now, tz).contains(now)


@PROPERTY
@given(period=st.sampled_from(PERIODIC), now=instants, tz=zones)
def test_consecutive_windows_tile_time(period: Period, now: datetime, tz: ZoneInfo) -> None:
    span = window(period, now, tz)
    assert span.end is not None
    following = window(period, span.end, tz)
    preceding = window(period, span.start - TICK, tz)
    assert following.start == span.end
    assert preceding.end == span.start
    assert window(period, span.end - TICK, tz) == span
    assert window(period, span.start, tz) == span


@PROPERTY
@given(period=st.sampled_from(PERIODIC), now=instants, tz=zones)
def test_windows_begin_on_a_new_local_date(period: Period, now: datetime, tz: ZoneInfo) -> None:
    span = window(period, now, tz)
    first = span.start.astimezone(tz)
    just_before = (span.start - TICK).astimezone(tz)
    assert first.date() != just_before.date()
    # Midnight, unless the clock jumped over it at that very instant.
    assert first.time() == time() or first.utcoffset() != just_before.utcoffset()
    if period is Period.WEEKLY:
        assert first.weekday() == 0
    if period is Period.MONTHLY:
        assert first.day == 1


@PROPERTY
@given(period=st.sampled_from(PERIODIC), now=instants, tz=zones)
def test_windows_last_about_as_long_as_their_period(
    period: Period, now: datetime, tz: ZoneInfo
) -> None:
    span = window(period, now, tz)
    assert span.end is not None
    nominal = {Period.DAILY: (1, 1), Period.WEEKLY: (7, 7), Period.MONTHLY: (28, 31)}[period]
    # Clock changes stretch or shrink a window by a few hours; Samoa dropped a whole day.
    assert timedelta(days=nominal[0] - 1) <= span.end - span.start
    assert span.end - span.start <= timedelta(days=nominal[1], hours=3)


@PROPERTY
@given(now=instants, tz=zones, left=st.timedeltas(TICK, timedelta(days=40)))
def test_describe_reset_always_names_the_wait(now: datetime, tz: ZoneInfo, left: timedelta) -> None:
    phrase = describe_reset(Window(now - timedelta(days=1), now + left), now, tz)
    assert phrase.startswith("resets ")
    assert phrase.endswith(")")
    assert "(in " in phrase
    assert " 0 " not in phrase
