"""Units: "4GiB", "10Gbit/s", "300ms" in, SI numbers out, and back to text."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.units import (
    GiB,
    KiB,
    MiB,
    format_rate,
    format_size,
    format_time,
    parse_rate,
    parse_size,
    parse_time,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 * GiB),
        ("64MiB", 64 * MiB),
        ("4KiB", 4 * KiB),
        ("4 KiB", 4 * KiB),
        ("512B", 512),
        ("1.5GB", 1_500_000_000),
        ("1KB", 1000),
        ("1kB", 1000),
        ("2MB", 2_000_000),
        ("3TB", 3 * 10**12),
        ("1TiB", 1024 * GiB),
        ("1.5KiB", 1536),
        ("4G", 4 * GiB),  # QEMU's -m 4G: a suffix alone is binary
        ("4GB", 4 * 10**9),  # with B it is decimal
        ("512M", 512 * MiB),
        ("64k", 64 * KiB),
        ("64K", 64 * KiB),
        ("1T", 1024 * GiB),
        ("4096", 4096),
        ("1e9", 10**9),
        (4096, 4096),
        (4096.0, 4096),
        (0, 0),
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    """Sizes take binary and decimal units; a bare number is bytes."""
    value = parse_size(text)
    assert value == expected
    assert isinstance(value, int)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10Gbit/s", 1.25e9),
        ("1Gbps", 1.25e8),
        ("100Mbit/s", 12.5e6),
        ("1kbit/s", 125.0),
        ("8bit/s", 1.0),
        ("128MiB/s", 128.0 * MiB),
        ("1GiB/s", float(GiB)),
        ("1GB/s", 1e9),
        ("1KB/s", 1e3),
        ("5B/s", 5.0),
        ("1MiBps", float(MiB)),
        ("1000", 1000.0),
        (0, 0.0),
    ],
)
def test_parse_rate(text: object, expected: float) -> None:
    """Rates take bit/s and B/s forms (and the bps/Bps spellings); a bare number is bytes/s."""
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300ms", 0.3),
        ("2s", 2.0),
        ("100us", 1e-4),
        ("100µs", 1e-4),
        ("5ns", 5e-9),
        ("1.5min", 90.0),
        ("2h", 7200.0),
        ("0.1ms", 1e-4),
        (".5s", 0.5),
        ("3", 3.0),
        (2.5, 2.5),
    ],
)
def test_parse_time(text: object, expected: float) -> None:
    """Times take ns/us/ms/s/min/h; a bare number is seconds."""
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (parse_size, "4 Gib", r"unknown size unit 'Gib'; did you mean 'GiB'\? \(got 4 Gib\)"),
        (parse_size, "4gib", r"did you mean 'GiB'\?"),
        (parse_size, "10Gbit/s", r"unknown size unit 'Gbit/s'"),
        (parse_size, "-5GiB", r"must not be negative \(got -5GiB\)"),
        (parse_size, "1.1KiB", r"must be a whole number of bytes \(got 1.1KiB\)"),
        (parse_size, 1.5, r"must be a whole number of bytes"),
        (parse_size, True, r"expected a size such as 4GiB or a number \(got true\)"),
        (parse_size, None, r"expected a size .* \(got null\)"),
        (parse_size, [1], r"expected a size"),
        (parse_size, float("nan"), r"must be a finite number"),
        (parse_size, float("inf"), r"must be a finite number"),
        (parse_size, "nan", r"expected a size"),
        (parse_size, "abc", r"expected a size such as 4GiB or a number \(got abc\)"),
        (parse_size, "", r"expected a size .* \(got ''\)"),
        (parse_size, "1e30TB", r"is too large"),
        (parse_rate, "4GiB", r"unknown rate unit 'GiB'; did you mean 'GiB/s'\?"),
        (parse_rate, "10Gbit", r"did you mean 'Gbit/s'\?"),
        (parse_rate, "-5B/s", r"must not be negative"),
        (parse_rate, False, r"expected a rate such as 10Gbit/s"),
        (parse_rate, "1e400", r"is too large"),
        (parse_time, "300 sec", r"unknown time unit 'sec'; did you mean 's'\?"),
        (parse_time, "3 weeks", r"use one of ns, us, ms, s, min, h"),
        (parse_time, "-1s", r"must not be negative"),
        (parse_time, float("-inf"), r"must be a finite number"),
    ],
)
def test_parse_errors(parse: object, value: object, message: str) -> None:
    """Bad quantities raise ValueError saying what is wrong and what was given."""
    assert callable(parse)
    with pytest.raises(ValueError, match=message):
        parse(value)


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (parse_size, 4096, r"^a bare number has no unit; write 4096GiB or 4096G, 4096MiB or 4096M, "
                           r"or 4096B \(G alone is binary as in QEMU's -m 4G; GB is decimal\) "
                           r"\(got 4096\)$"),
        (parse_size, "4096", r"^a bare number has no unit; write 4096GiB or 4096G"),
        (parse_size, 1.5e3, r"^a bare number has no unit"),
        (parse_rate, 125e6, r"^a bare number has no unit; write 125000000Gbit/s, "),
        (parse_rate, 1, r"write 1Gbit/s, 1MiB/s or 1MB/s \(1Gbit/s is 125MB/s\) \(got 1\)$"),
        (parse_time, 300, r"^a bare number has no unit; write 300ms or 300s \(got 300\)$"),
        (parse_time, "0.5", r"write 0.5ms or 0.5s"),
        (parse_time, -1, r"write -1ms or -1s"),
    ],
)
def test_bare_numbers_refused(parse: object, value: object, message: str) -> None:
    """``bare=False`` (the scenario loader's) refuses a number without a unit, naming spellings."""
    assert callable(parse)
    parse(value, signed=True)  # the default takes it, in SI units
    with pytest.raises(ValueError, match=message):
        parse(value, bare=False, signed=True)


@pytest.mark.parametrize("value", [0, 0.0, "0", -0.0, "0GiB", "4G", "300ms", "1Gbit/s"])
def test_bare_zero_and_units_pass(value: object) -> None:
    for parse in (parse_size, parse_rate, parse_time):
        try:
            parse(value, bare=False)
        except ValueError as e:
            assert "bare" not in str(e)


def test_bare_suffix_is_not_a_rate_and_is_never_written() -> None:
    """``G`` alone is a size suffix only, and the exact formatter keeps writing ``GiB``."""
    with pytest.raises(ValueError, match="unknown rate unit 'G/s'"):
        parse_rate("1G/s")
    assert format_size(4 * GiB, exact=True) == "4GiB"
    assert format_size(64 * KiB, exact=True) == "64KiB"


def test_signed_lets_negatives_through() -> None:
    """Callers that check ranges themselves can ask for negative values."""
    assert parse_size("-4KiB", signed=True) == -4096
    assert parse_rate("-8bit/s", signed=True) == -1.0
    assert parse_time("-300ms", signed=True) == -0.3


@pytest.mark.parametrize(
    ("value", "text"),
    [(4 * GiB, "4 GiB"), (1536 * KiB, "1.5 MiB"), (512, "512 B"), (0, "0 B"), (64 * MiB, "64 MiB")],
)
def test_format_size(value: int, text: str) -> None:
    """Sizes print in the largest binary unit, with at most two decimals."""
    assert format_size(value) == text


def test_format_rate() -> None:
    """Rates print in binary bytes per second, or decimal bits per second on request."""
    assert format_rate(128 * MiB) == "128 MiB/s"
    assert format_rate(1.25e9, bits=True) == "10 Gbit/s"
    assert format_rate(1.25e8, bits=True) == "1 Gbit/s"
    assert format_rate(0.0) == "0 B/s"


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.3, "300 ms"), (2.0, "2 s"), (1e-4, "100 us"), (0.0, "0 s"), (750.0, "12.5 min"),
     (7200.0, "2 h"), (5e-9, "5 ns")],
)
def test_format_time(value: float, text: str) -> None:
    """Times print in the unit that keeps the number readable."""
    assert format_time(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(4 * GiB, "4GiB"), (1000, "1KB"), (1536, "1.5KiB"), (1_500_000_000, "1.5GB"), (7, "7B")],
)
def test_format_size_exact(value: int, text: str) -> None:
    """The exact form is the shortest text that parses back to the same bytes."""
    assert format_size(value, exact=True) == text


def test_exact_forms_read_well() -> None:
    """Exact rates and times pick the natural unit when it is the shortest."""
    assert format_rate(1.25e9, exact=True) == "10Gbit/s"
    assert format_rate(128 * MiB, exact=True) == "128MiB/s"
    assert format_rate(0.0, exact=True) == "0B/s"
    assert format_time(0.3, exact=True) == "300ms"
    assert format_time(1e-4, exact=True) == "100us"
    assert format_time(600.0, exact=True) == "10min"
    assert format_time(0.0, exact=True) == "0s"


@given(st.integers(min_value=0, max_value=2**62))
def test_size_round_trip(value: int) -> None:
    """parse_size(format_size(n, exact=True)) == n for every size."""
    assert parse_size(format_size(value, exact=True)) == value


@given(st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False))
def test_rate_round_trip(value: float) -> None:
    """parse_rate(format_rate(x, exact=True)) == x, bit for bit."""
    assert parse_rate(format_rate(value, exact=True)) == value


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False))
def test_time_round_trip(value: float) -> None:
    """parse_time(format_time(x, exact=True)) == x, bit for bit."""
    assert parse_time(format_time(value, exact=True)) == value


@given(st.floats(min_value=1e-9, max_value=1e6))
def test_human_time_is_close(value: float) -> None:
    """The human form is within rounding of the value."""
    text = format_time(value)
    assert math.isclose(parse_time(text.replace(" ", "")), value, rel_tol=0.01, abs_tol=1e-11)
