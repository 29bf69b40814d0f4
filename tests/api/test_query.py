"""Times, cursors and parameters of the operations layer, without an app."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.admin.query import CURSOR_PATTERN, Cursor, parse_time
from relay.api.params import EVENT_FILTERS, PAGING, ParamError, parse_params


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0.0),
        ("1718000000", 1718000000.0),
        ("1718000000.25", 1718000000.25),
        ("1.7e9", 1.7e9),
        ("2024-06-10", calendar.timegm((2024, 6, 10, 0, 0, 0))),
        ("2024-06-10T08:00:00Z", calendar.timegm((2024, 6, 10, 8, 0, 0))),
        ("2024-06-10t08:00:00z", calendar.timegm((2024, 6, 10, 8, 0, 0))),
        ("2024-06-10 08:00", calendar.timegm((2024, 6, 10, 8, 0, 0))),
        ("2024-06-10T10:00:00+02:00", calendar.timegm((2024, 6, 10, 8, 0, 0))),
        ("2024-06-10T05:30:00-0230", calendar.timegm((2024, 6, 10, 8, 0, 0))),
        ("2024-06-10T08:00:00.5Z", calendar.timegm((2024, 6, 10, 8, 0, 0)) + 0.5),
        ("2016-12-31T23:59:60Z", calendar.timegm((2017, 1, 1, 0, 0, 0))),  # leap second
        ("2024-02-29T00:00:00Z", calendar.timegm((2024, 2, 29, 0, 0, 0))),
        ("2024-06-10T08:00:00,5+0200", calendar.timegm((2024, 6, 10, 6, 0, 0)) + 0.5),
        ("9999-12-31T23:59:59Z", 253402300799.0),  # MAX_TIME bounds numbers, not dates
    ],
)
def test_times(text: str, expected: float) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "-5", "1e12", "inf", "nan", "2023-02-29", "2024-13-01", "2024-06-10T24:00",
     "2024-06-10T08:60", "2024-06-10T08:00+24:00", "2024-6-1", "١٢٣", "٢٠٢٤-٠١-٠١",
     "1718000000\n", "2024-06-10\n", "0000-01-01T00:00:00Z", "2024-06-10T08:00:00ſ",
     "1e400"],
)  # fmt: skip
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_a_bad_time_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"'2023-02-29' is neither .* \(day is out of range"):
        parse_time("2023-02-29")
    with pytest.raises(ValueError, match=r"'1e12' is out of range for Unix seconds"):
        parse_time("1e12")


@settings(max_examples=200, deadline=None, database=None)
@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))])))
def test_any_iso_time_python_writes_reads_back(moment: datetime) -> None:
    assert parse_time(moment.isoformat()) == pytest.approx(moment.timestamp(), abs=1e-6)


@settings(max_examples=200, deadline=None, database=None)
@given(st.from_regex(CURSOR_PATTERN, fullmatch=True))
def test_every_cursor_the_schema_allows_decodes(text: str) -> None:
    cursor = Cursor.decode(text)
    assert Cursor.decode(cursor.encode()) == cursor


def test_cursors_round_trip_and_order() -> None:
    cursor = Cursor(1718000000.123456, b"evt_1", b"dlv_2")
    assert re.match(CURSOR_PATTERN, cursor.encode())
    assert Cursor.decode(cursor.encode()) == cursor
    assert cursor.admits(1718000000.0, b"evt_9") and cursor.admits(1718000000.123456, b"evt_0")
    assert cursor.admits(1718000000.123456, b"evt_1")  # it stopped inside that event
    assert not Cursor(1.0, b"b").admits(1.0, b"b") and not Cursor(1.0, b"b").admits(2.0, b"a")
    for bad in ("", "x", "1.5", "1-zz", "1-abc", "-1-aa"):
        with pytest.raises(ValueError):
            Cursor.decode(bad)


def test_parameters_parse_strictly() -> None:
    params = (*EVENT_FILTERS, *PAGING)
    values = parse_params(params, {"limit": ["5"], "q": ["x"]}, {})
    assert values["limit"] == 5 and values["q"] == "x" and values["source"] is None
    for query in ({"limit": ["5.0"]}, {"limit": [" 5"]}, {"limit": ["1", "2"]}, {"nope": ["1"]}):
        with pytest.raises(ParamError):
            parse_params(params, query, {})
