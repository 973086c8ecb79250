"""Quantities as people write them ("4GiB", "10Gbit/s", "300ms") turned into SI numbers and back.

Sizes are ``int`` bytes, rates ``float`` bytes per second, times ``float`` seconds. A bare number is
already in those units (``bare=False`` refuses one other than 0, as the scenario loader does). A size
suffix without ``B`` (``4G``, ``512M``, ``64k``) is binary, as in QEMU's ``-m 4G``: ``4G`` is
``4GiB``; with ``B`` the prefix is decimal (``4GB`` is 4 * 10**9 bytes). Unit names are case-sensitive where case carries meaning (``b`` is a bit,
``B`` a byte; ``m`` would be milli, so mega is ``M``). Arithmetic goes through ``Fraction``, so
``"1.5GB"`` is exactly 1 500 000 000 bytes and ``parse(format(x, exact=True)) == x`` holds.
"""

from __future__ import annotations

import difflib
import math
import re
from fractions import Fraction

__all__ = [
    "GiB",
    "KiB",
    "MiB",
    "PAGE_BYTES",
    "QEMU_SIZE_SUFFIXES",
    "RATE_UNITS",
    "SHOWN_UNITS",
    "SIZE_UNITS",
    "TIME_UNITS",
    "TiB",
    "bare_number_hint",
    "format_rate",
    "format_size",
    "format_time",
    "parse_rate",
    "parse_size",
    "parse_time",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB
PAGE_BYTES = 4 * KiB

_BINARY = {"Ki": KiB, "Mi": MiB, "Gi": GiB, "Ti": TiB}
_DECIMAL = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}

#: size unit -> bytes
SIZE_UNITS: dict[str, int] = {"B": 1}
SIZE_UNITS.update({p + "B": f for p, f in _DECIMAL.items()})
SIZE_UNITS.update({p + "B": f for p, f in _BINARY.items()})

#: rate unit -> bytes per second (exact fractions: a bit is 1/8 byte)
RATE_UNITS: dict[str, Fraction] = {}
for _unit, _factor in SIZE_UNITS.items():
    RATE_UNITS[_unit + "/s"] = Fraction(_factor)
    RATE_UNITS[_unit + "ps"] = Fraction(_factor)
for _prefix, _factor in {"": 1, **_DECIMAL, **_BINARY}.items():
    for _suffix in ("bit/s", "b/s", "bps"):
        RATE_UNITS[_prefix + _suffix] = Fraction(_factor, 8)

#: QEMU's size suffixes (``-m 4G``, ``qemu_strtosz``): binary, sizes only (not rates)
QEMU_SIZE_SUFFIXES: dict[str, int] = {"k": KiB, "K": KiB, "M": MiB, "G": GiB, "T": TiB}
SIZE_UNITS.update(QEMU_SIZE_SUFFIXES)

#: time unit -> seconds
TIME_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),
    "ms": Fraction(1, 10**3),
    "s": Fraction(1),
    "min": Fraction(60),
    "h": Fraction(3600),
}

# The units listed in messages (aliases such as "kB", "Mbps" or "µs" are accepted but not listed).
SHOWN_UNITS = {
    "size": "B, KiB, MiB, GiB, TiB, K, M, G, T, KB, MB, GB, TB",
    "rate": "bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s, B/s, KiB/s, MiB/s, GiB/s, KB/s, MB/s, GB/s",
    "time": "ns, us, ms, s, min, h",
}
_EXAMPLE = {"size": "4GiB", "rate": "10Gbit/s", "time": "300ms"}


def bare_number_hint(kind: str, number: str) -> str:
    """How to write ``number`` of ``kind`` with a unit, QEMU-style, for a message."""
    if kind == "size":
        return (f"write {number}GiB or {number}G, {number}MiB or {number}M, or {number}B "
                "(G alone is binary as in QEMU's -m 4G; GB is decimal)")
    if kind == "rate":
        return (f"write {number}Gbit/s, {number}MiB/s or {number}MB/s "
                "(1Gbit/s is 125MB/s)")
    return f"write {number}ms or {number}s"

_LIMIT = 2**64  # QEMU's sizes and rates are uint64; beyond that floats lose meaning anyway
_QUANTITY = re.compile(
    r"^\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>[^\d\s.+-].*?)?\s*$"
)


def _show(value: object) -> str:
    """The value as a message shows it after "got": YAML-like, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value and value.strip() == value and value.isprintable():
        text = value
    else:  # quoted: empty, padded or with control characters ("4\nGiB"), so it stays one line
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _quoted(text: str, limit: int = 30) -> str:
    """``'text'`` for a message, escaped and cut to ``limit`` characters."""
    quoted = repr(text[:limit])
    return quoted if len(text) <= limit else quoted[:-1] + "..." + quoted[-1]


def _parse(
    value: object, kind: str, units: dict[str, int] | dict[str, Fraction], signed: bool,
    bare: bool = True,
) -> Fraction:
    """Parse ``value`` as a quantity of ``kind`` into an exact Fraction of SI units.

    ``bare=False``: a number without a unit is refused unless it is 0."""
    got = f"(got {_show(value)})"
    unit = ""
    number = _show(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        number = str(int(value))  # 125e6 -> "125000000", not "125000000.0"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a {kind} such as {_EXAMPLE[kind]} or a number {got}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number {got}")
        amount = Fraction(value)
    elif isinstance(value, int):
        amount = Fraction(value)
    else:
        match = _QUANTITY.match(value)
        if match is None:
            raise ValueError(f"expected a {kind} such as {_EXAMPLE[kind]} or a number {got}")
        unit = match.group("unit") or ""
        if unit and unit not in units:
            shown = SHOWN_UNITS[kind].split(", ")
            close = [u for u in shown if u.lower() == unit.lower()]
            close = close or difflib.get_close_matches(unit, shown, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"use one of {SHOWN_UNITS[kind]}"
            raise ValueError(f"unknown {kind} unit {_quoted(unit)}; {hint} {got}")
        number = match.group("number")
        mantissa, _, exponent = number.lower().partition("e")
        if len(mantissa) > 100:  # Fraction would parse it, slowly, only to find it too precise
            raise ValueError(f"has too many digits {got}")
        if len(exponent.lstrip("+-").lstrip("0")) > 3:  # 1e9999999GiB: 10**9999999 takes minutes
            raise ValueError(f"has an exponent out of range {got}")
        amount = Fraction(number) * (units[unit] if unit else 1)
    if amount < 0 and not signed:
        raise ValueError(f"must not be negative {got}")
    if abs(amount) > _LIMIT:
        raise ValueError(f"is too large {got}")
    if not bare and not unit and amount != 0:
        raise ValueError(f"a bare number has no unit; {bare_number_hint(kind, number)} {got}")
    return amount


def parse_size(value: object, *, signed: bool = False, bare: bool = True) -> int:
    """Bytes in ``value``: ``"4GiB"``, ``"4G"`` (= 4GiB), ``"1.5GB"``, ``"512B"`` or a bare number
    of bytes.

    ``signed=True`` lets negative values through (for callers that check ranges themselves);
    ``bare=False`` refuses a bare number other than 0.

    Raises:
        ValueError: unknown unit, negative, not finite, not a whole number of bytes, beyond
            2**64, written with more than 100 digits or a 4-digit exponent, or not a number or
            string at all (``bool`` included).
    """
    amount = _parse(value, "size", SIZE_UNITS, signed, bare)
    if amount.denominator != 1:
        raise ValueError(f"must be a whole number of bytes (got {_show(value)})")
    return int(amount)


def parse_rate(value: object, *, signed: bool = False, bare: bool = True) -> float:
    """Bytes per second in ``value``: ``"10Gbit/s"``, ``"1Gbps"``, ``"128MiB/s"`` or a bare number."""
    return float(_parse(value, "rate", RATE_UNITS, signed, bare))


def parse_time(value: object, *, signed: bool = False, bare: bool = True) -> float:
    """Seconds in ``value``: ``"300ms"``, ``"2s"``, ``"100us"``, ``"1.5min"`` or a bare number."""
    return float(_parse(value, "time", TIME_UNITS, signed, bare))


def _number(value: float) -> str:
    """A short human number: at most two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _scaled(value: float, steps: list[tuple[str, float]]) -> str:
    """``value`` in the largest unit of ``steps`` (ascending) that keeps it >= 1."""
    unit, factor = steps[0]
    for name, size in steps:
        if abs(value) >= size:
            unit, factor = name, size
    return f"{_number(value / factor)} {unit}"


def _exact(value: float, units: dict[str, Fraction]) -> str:
    """The shortest text in one of ``units`` that parses back to exactly ``value``.

    Parsing computes ``Fraction(number) * factor`` (then ``int`` or ``float``); the candidates
    here are checked with that same arithmetic.
    """
    whole = isinstance(value, int)
    exact = Fraction(value)
    # units that leave between 1 and 10**6 of them give the short texts; try the rest only if
    # none of those works
    likely = {u: f for u, f in units.items() if 1 <= exact / f < 10**6}
    tried = (likely, units) if likely else (units,)
    for group in tried:
        text = _exact_in(value, exact, whole, units, group)
        if text is not None:
            return text
    return repr(value)


def _exact_in(value: float, exact: Fraction, whole: bool, units: dict[str, Fraction],
              group: dict[str, Fraction]) -> str | None:
    best: tuple[int, bool, int, str] | None = None
    order_of = {unit: i for i, unit in enumerate(units)}
    for unit, factor in group.items():
        order = order_of[unit]
        if whole:  # bytes: an integer or a short exact decimal of the unit
            number = _whole_decimal(int(value), int(factor))
            if number is None:
                continue
            candidates = [number]
        else:
            scaled = exact / factor
            if scaled.denominator == 1:
                candidates = [str(scaled.numerator)]
            else:
                approx = float(scaled)
                candidates = [f"{approx:.0f}", repr(approx)]
                candidates = [c for c in candidates if float(Fraction(c) * factor) == value]
        for number in candidates:
            key = (len(number), "." in number, order, number + unit)
            if best is None or key < best:
                best = key
    return None if best is None else best[3]


def _whole_decimal(value: int, factor: int) -> str | None:
    """``value / factor`` written exactly with at most six decimals, or None."""
    for places in range(7):
        scaled, rest = divmod(value * 10**places, factor)
        if rest == 0:
            if places == 0:
                return str(scaled)
            return f"{scaled // 10**places}.{scaled % 10**places:0{places}d}"
    return None


_EXACT_SIZE = {u: Fraction(f) for u, f in SIZE_UNITS.items()
               if u != "kB" and u not in QEMU_SIZE_SUFFIXES}
_EXACT_RATE = {
    u: RATE_UNITS[u]
    for u in ("B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s", "KB/s", "MB/s", "GB/s", "TB/s",
              "bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s")
}
_EXACT_TIME = {u: TIME_UNITS[u] for u in ("s", "ms", "us", "ns", "min", "h")}


def format_size(value: int, *, exact: bool = False) -> str:
    """Bytes for people: ``"4 GiB"``, ``"1.5 MiB"``, ``"512 B"`` (binary prefixes, two decimals).

    With ``exact=True``: the shortest text without spaces that ``parse_size`` maps back to
    ``value`` exactly (``"4GiB"``, ``"1.5GB"``, ``"1000B"``), for writing YAML.
    """
    if exact:
        return _exact(value, _EXACT_SIZE)
    return _scaled(value, [("B", 1), ("KiB", KiB), ("MiB", MiB), ("GiB", GiB), ("TiB", TiB)])


def format_rate(value: float, *, bits: bool = False, exact: bool = False) -> str:
    """Bytes per second for people: ``"128 MiB/s"``; with ``bits=True`` ``"10 Gbit/s"``.

    Bytes use binary prefixes (as QEMU's sizes do), bits decimal ones (as links are sold).
    With ``exact=True``: the shortest text, in any unit, that ``parse_rate`` maps back to ``value``.
    """
    if exact:
        return _exact(value, _EXACT_RATE)
    if bits:
        steps = [("bit/s", 1.0), ("kbit/s", 1e3), ("Mbit/s", 1e6), ("Gbit/s", 1e9), ("Tbit/s", 1e12)]
        return _scaled(value * 8, steps)
    steps = [("B/s", 1.0), ("KiB/s", KiB), ("MiB/s", MiB), ("GiB/s", GiB), ("TiB/s", TiB)]
    return _scaled(value, steps)


def format_time(value: float, *, exact: bool = False) -> str:
    """Seconds for people: ``"300 ms"``, ``"2 s"``, ``"100 us"``, ``"12.5 min"``.

    With ``exact=True``: the shortest text that ``parse_time`` maps back to ``value`` exactly.
    """
    if exact:
        return _exact(value, _EXACT_TIME)
    if value == 0:
        return "0 s"
    steps = [("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)]
    if abs(value) >= 7200:
        steps.append(("h", 3600.0))
    elif abs(value) >= 600:
        steps.append(("min", 60.0))
    return _scaled(value, steps)
