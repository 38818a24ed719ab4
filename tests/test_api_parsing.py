"""The pure edges of the API on their own: time text, and the upload's row checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ticklens.domain.times import iso_ms, parse_time
from ticklens.domain.upload import parse_bar_csv

NOW = 1_800_000_000_000
HEADER = "symbol,timeframe,timestamp,open,high,low,close,volume\n"


@pytest.mark.parametrize("ms", [0, 999, 1_721_347_140_123, 1_709_164_800_000, 253_402_300_799_999])
def test_iso_ms_matches_datetime_and_round_trips(ms: int) -> None:
    want = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    assert iso_ms(ms) == want
    assert parse_time(iso_ms(ms)) == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1721347140123", 1_721_347_140_123),
        ("2024-07-18T23:59:00Z", 1_721_347_140_000),
        ("2024-07-18T23:59:00", 1_721_347_140_000),  # no zone: UTC
        ("2024-07-19T01:59:00+02:00", 1_721_347_140_000),
        ("2024-07-18", 1_721_260_800_000),
    ],
)
def test_parse_time_accepts_iso_and_epoch_ms(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize("text", ["", "yesterday", "-5", "1e12", "2024-02-30", "99999999999999999"])
def test_parse_time_rejects_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_time(text)


def test_upload_rows_pass_and_optional_columns_are_read() -> None:
    text = "Symbol,Timeframe,Timestamp,Open,High,Low,Close,Volume,Trades\n" + (
        "BTCUSDT,5m,2024-07-18T23:55:00Z,10,12,9,11,3.5,7\nbtcusdt,1s,1721347140000,10,10,10,10,0,\n"
    )
    p = parse_bar_csv(text.encode(), NOW)
    assert p.message is None and p.bad_rows == 0
    assert [r[:8] for r in p.rows] == [
        ("btcusdt", "5m", 1_721_346_900_000, 10.0, 12.0, 9.0, 11.0, 3.5),
        ("btcusdt", "1s", 1_721_347_140_000, 10.0, 10.0, 10.0, 10.0, 0.0),
    ]
    assert p.rows[0][9] == 7 and p.rows[1][9] is None


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("btcusdt,1m,2024-07-18T23:59:00Z,10,9,8,9.5,1", "high 9.0 is below"),
        ("btcusdt,1m,2024-07-18T23:59:00Z,10,12,10.5,11,1", "low 10.5 is above"),
        ("btcusdt,1m,2024-07-18T23:59:30Z,10,12,9,11,1", "not aligned"),
        ("btcusdt,2m,2024-07-18T23:59:00Z,10,12,9,11,1", "timeframe"),
        ("btc_usdt,1m,2024-07-18T23:59:00Z,10,12,9,11,1", "symbol"),
        ("btcusdt,1m,1721347140,10,12,9,11,1", "epoch seconds"),
        ("btcusdt,1m,2030-01-01T00:00:00Z,10,12,9,11,1", "future"),
        ("btcusdt,1m,2024-07-18T23:59:00Z,0,12,9,11,1", "open 0.0 must be > 0"),
        ("btcusdt,1m,2024-07-18T23:59:00Z,10,12,9,11,-1", "volume -1.0 must be ≥ 0"),
        ("btcusdt,1m,2024-07-18T23:59:00Z,10,12,9,nan,1", "close 'nan' is not a number"),
        ("btcusdt,1m,2024-07-18T23:59:00Z,10,12,9,11,", "volume None is not a number"),
    ],
)
def test_a_bad_upload_row_is_named_with_its_reason_and_nothing_passes(row: str, reason: str) -> None:
    good = "ethusdt,1m,2024-07-18T23:58:00Z,1,2,0.5,1.5,1\n"
    p = parse_bar_csv((HEADER + good + row + "\n" + good.replace("23:58", "23:57")).encode(), NOW)
    assert p.bad_rows == 1 and p.rows == []
    ((row_no, errors),) = p.errors
    assert row_no == 2
    assert any(reason in e for e in errors), errors


def test_a_spreadsheet_byte_order_mark_is_accepted() -> None:
    p = parse_bar_csv(("\ufeff" + HEADER + "btcusdt,1m,2024-07-18T23:59:00Z,10,12,9,11,1\n").encode(), NOW)
    assert p.message is None and len(p.rows) == 1


def test_duplicate_upload_rows_are_rejected() -> None:
    row = "btcusdt,1m,2024-07-18T23:59:00Z,10,12,9,11,1\n"
    p = parse_bar_csv((HEADER + row + row).encode(), NOW)
    assert p.bad_rows == 1 and p.errors[0][0] == 2 and "duplicate of row 1" in p.errors[0][1][0]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"symbol,timeframe,open\nbtcusdt,1m,1\n", "missing column"),
        (HEADER.encode(), "no rows"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (b'symbol,timeframe\n"unclosed,1m\n', "CSV"),
    ],
)
def test_an_unusable_upload_file_is_rejected_as_a_whole(data: bytes, reason: str) -> None:
    p = parse_bar_csv(data, NOW)
    assert p.message and reason in p.message and p.rows == []
