"""Fuzzing the XBZRLE decoder with what a broken or hostile source could send: arbitrary bytes,
records built from random (zrun, nzrun) pairs, and valid encodings with bits flipped, bytes
inserted, deleted or cut off, against old pages of 4096 bytes and of odd lengths (0, 1, 7, 4097,
16385, ...).

Properties: ``decode`` returns bytes of the old page's length or raises ``XbzrleDecodeError``,
never another exception and never a crash (the kernels are compiled code: a stray read or write
could fault); it agrees with a byte-by-byte oracle written from the six rules of REF §2.3;
``old`` is left untouched. ``decode_into`` returns the oracle's value and leaves the page as the
oracle does (on a rejected record, the pairs before the bad one applied); ``decode_batch`` agrees
row by row.

Each test runs a bounded number of examples by default (about 10 s of CPU in all, most of it
Hypothesis's own, ~2 ms an example); set ``MIGSIM_FUZZ_EXAMPLES`` (``make fuzz``) to run that
many per test, with fresh random examples instead of the fixed ones.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import fuzz_settings

from sim.encoders import xbzrle
from sim.errors import XbzrleDecodeError


def fuzz(default: int) -> Any:
    """Hypothesis settings: ``default`` examples, fixed seeds; or MIGSIM_FUZZ_EXAMPLES, random."""
    return fuzz_settings(default, "MIGSIM_FUZZ_EXAMPLES")


# ---------------------------------------------------------------- the oracle (REF §2.3)


def _uleb(src: bytes, i: int) -> tuple[int, int] | None:
    """QEMU's 14-bit ULEB128 at src[i] (two bytes available): (value, width), None if the
    second byte has bit 7 set."""
    if src[i] < 0x80:
        return src[i], 1
    if src[i + 1] & 0x80:
        return None
    return (src[i] & 0x7F) | (src[i + 1] << 7), 2


def oracle(src: bytes, page: bytearray) -> int:
    """QEMU's ``xbzrle_decode_buffer`` in place: the offset after the last nzrun, or -1."""
    i = d = 0
    slen, dlen = len(src), len(page)
    while i < slen:
        if slen - i < 2:  # rule 1
            return -1
        run = _uleb(src, i)
        if run is None or (i and run[0] == 0):  # rule 2
            return -1
        d += run[0]
        i += run[1]
        if d > dlen:  # rule 3
            return -1
        if slen - i < 2:  # rule 4
            return -1
        run = _uleb(src, i)
        if run is None or run[0] == 0:  # rule 5
            return -1
        count = run[0]
        i += run[1]
        if d + count > dlen or i + count > slen:  # rule 6
            return -1
        page[d:d + count] = src[i:i + count]
        d += count
        i += count
    return d


# ---------------------------------------------------------------- inputs

LENGTHS = [4096, 4096, 4096, 0, 1, 2, 7, 8, 64, 127, 128, 129, 4095, 4097, 16383, 16384, 16385,
           20000]


def _page(length: int, seed: int, kind: str) -> bytes:
    rng = random.Random(seed)
    if kind == "zero":
        return bytes(length)
    if kind == "random":
        return rng.randbytes(length)
    page = bytearray(length)  # sparse: a few runs of random bytes
    for _ in range(rng.randrange(8) if length else 0):
        at = rng.randrange(length)
        size = min(rng.randrange(1, 300), length - at)
        page[at:at + size] = rng.randbytes(size)
    return bytes(page)


old_pages = st.builds(_page, st.sampled_from(LENGTHS) | st.integers(0, 9000),
                      st.integers(0, 2**32), st.sampled_from(["zero", "random", "sparse"]))


def _uleb_bytes(value: int, form: str) -> bytes:
    """A run length as a record may carry it: canonical, 2-byte non-canonical, or broken."""
    value &= 0x3FFF
    if form == "two":  # non-canonical (80 00 = 0), which QEMU accepts
        return bytes([(value & 0x7F) | 0x80, value >> 7])
    if form == "three":  # second byte with bit 7 set: rejected
        return bytes([(value & 0x7F) | 0x80, (value >> 7) | 0x80, 0x01])
    return bytes([value]) if value < 128 else bytes([(value & 0x7F) | 0x80, value >> 7])


RUN_LENGTHS = [0, 0, 1, 2, 7, 8, 63, 64, 127, 128, 129, 255, 4095, 4096, 4097, 16383]


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, or a stream of (zrun, nzrun, literals) pairs that are nearly right.

    Hypothesis picks the kind and a seed; the bytes come from ``random`` (drawing every byte
    through Hypothesis would cost ten times more per example)."""
    kind = draw(st.sampled_from(["bytes", "random", "pairs", "pairs", "pairs"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    rng = random.Random(draw(st.integers(0, 2**64)))
    if kind == "random":
        return rng.randbytes(rng.choice([1, 2, 3, 5, 16, 300, 5000]))
    out = bytearray()
    for _ in range(rng.randrange(7)):
        zrun = rng.choice(RUN_LENGTHS) if rng.random() < 0.7 else rng.randrange(0x4000)
        nzrun = rng.choice(RUN_LENGTHS) if rng.random() < 0.7 else rng.randrange(1, 600)
        out += _uleb_bytes(zrun, rng.choice(["one", "one", "one", "two", "three"]))
        out += _uleb_bytes(nzrun, rng.choice(["one", "one", "one", "two", "three"]))
        out += rng.randbytes(max(0, nzrun + rng.choice([0, 0, 0, 0, -1, 1, -3, 3])))
    if rng.random() < 0.3:
        del out[rng.randrange(len(out) + 1):]
    return bytes(out)


def _new_page(old: bytes, seed: int, writes: int) -> bytes:
    rng = random.Random(seed)
    new = bytearray(old)
    for _ in range(writes):
        if new:
            at = rng.randrange(len(new))
            size = rng.choice([1, 8, 64, 300, 2000])
            new[at:at + size] = rng.randbytes(min(size, len(new) - at))
    return bytes(new)


def _mutate(data: bytes, seed: int, count: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(count):
        action = rng.choice(["flip", "flip", "insert", "delete", "set", "cut", "repeat"])
        at = rng.randrange(len(out) + 1)
        if action == "flip" and out:
            at = min(at, len(out) - 1)
            out[at] ^= 1 << rng.randrange(8)
        elif action == "insert":
            out[at:at] = bytes(rng.choice([0x00, 0x7F, 0x80, 0xFF, rng.randrange(256)])
                               for _ in range(rng.randrange(1, 4)))
        elif action == "delete":
            del out[at:at + rng.randrange(1, 4)]
        elif action == "set" and out:
            at = min(at, len(out) - 1)
            out[at] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF])
        elif action == "cut":
            del out[at:]
        elif action == "repeat":
            out += out[at:]
    return bytes(out)


# ---------------------------------------------------------------- checks


def check_decode(data: bytes, old: bytes) -> None:
    """``decode`` gives the oracle's page or raises XbzrleDecodeError; ``old`` is untouched."""
    kept = bytes(old)
    want = bytearray(old)
    rc = oracle(data, want)
    try:
        got = xbzrle.decode(data, old)
    except XbzrleDecodeError as e:
        assert rc < 0, f"rejected a record the oracle decodes: {e}"
        assert str(e) and "\n" not in str(e)
    else:
        assert rc >= 0, "decoded a record the oracle rejects"
        assert isinstance(got, bytes)
        assert len(got) == len(old)
        assert got == bytes(want)
    assert old == kept


def check_decode_into(data: bytes, old: bytes) -> None:
    """``decode_into`` on a bytearray and on a numpy page: the oracle's value and page."""
    want = bytearray(old)
    rc = oracle(data, want)
    for page in (bytearray(old), np.frombuffer(old, dtype=np.uint8).copy()):
        try:
            got = xbzrle.decode_into(data, page)
        except XbzrleDecodeError:
            assert rc < 0
        else:
            assert rc >= 0
            assert got == rc
        assert bytes(page) == bytes(want)  # as QEMU: pairs before a bad one stay applied


# ---------------------------------------------------------------- tests


@fuzz(2000)
@given(records(), old_pages)
def test_decode_arbitrary_records(data: bytes, old: bytes) -> None:
    check_decode(data, old)


@fuzz(500)
@given(records(), old_pages)
def test_decode_into_arbitrary_records(data: bytes, old: bytes) -> None:
    check_decode_into(data, old)


@fuzz(800)
@given(old_pages, st.integers(0, 2**32), st.integers(0, 12), st.integers(0, 2**32),
       st.integers(0, 6))
def test_decode_mutated_valid_encodings(old: bytes, seed: int, writes: int, mutation_seed: int,
                                       mutations: int) -> None:
    new = _new_page(old, seed, writes)
    if len(old) % 8 or len(old) > xbzrle.MAX_PAGE_SIZE:  # encode takes QEMU's page shapes only
        with pytest.raises(ValueError):
            xbzrle.encode(old, new)
        return
    encoded = xbzrle.encode(old, new)
    if encoded is None:  # overflow: QEMU sends the page raw; a record of random bytes instead
        encoded = random.Random(seed).randbytes(len(old) // 2)
    else:
        assert xbzrle.decode(encoded, old) == new  # the unmutated record round-trips
    damaged = _mutate(encoded, mutation_seed, mutations)
    check_decode(damaged, old)
    check_decode_into(damaged, old)
    # and against a page it was not made for (the destination's copy has diverged)
    check_decode(damaged, new)


@fuzz(200)
@given(st.lists(records(), min_size=1, max_size=8), st.sampled_from([0, 8, 64, 4096]),
       st.integers(0, 2**32))
def test_decode_batch_agrees_with_the_oracle(datas: list[bytes], page_size: int,
                                             seed: int) -> None:
    width = max(len(d) for d in datas)
    src = np.zeros((len(datas), width), dtype=np.uint8)
    for row, data in enumerate(datas):
        src[row, :len(data)] = np.frombuffer(data, dtype=np.uint8)
    lengths = np.array([len(d) for d in datas], dtype=np.int64)
    old = [_page(page_size, seed + row, "sparse") for row in range(len(datas))]
    pages = np.array([np.frombuffer(p, dtype=np.uint8) for p in old], dtype=np.uint8)
    pages = pages.reshape(len(datas), page_size)
    codes = xbzrle.decode_batch(src, lengths, pages)
    for row, data in enumerate(datas):
        want = bytearray(old[row])
        rc = oracle(data, want)
        assert (int(codes[row]) < 0) == (rc < 0)
        if rc >= 0:
            assert int(codes[row]) == rc
        else:
            assert xbzrle.decode_error_reason(int(codes[row])).startswith("rule ")
        assert pages[row].tobytes() == bytes(want)


def test_known_edges() -> None:
    """Hand-picked records at the edges of each rule, on pages of 0, 1 and 4096 bytes."""
    records = [b"", b"\x00", b"\x00\x01", b"\x00\x01\xaa", b"\x80\x00\x01\xaa", b"\x80\x80\x01",
               b"\x00\x80\x80", b"\xff\x7f\x01\xaa", b"\x00\xff\x7f" + bytes(16383),
               b"\x00\x01\xaa\x00\x01\xbb", b"\x01\x01\xaa\x01\x01\xbb", b"\x00\x02\xaa",
               b"\x80\x20\x00", b"\x80\x20\x01\xaa"]
    for old in (b"", b"\x07", bytes(4096), bytes(range(256)) * 16):
        for data in records:
            check_decode(data, old)
            check_decode_into(data, old)
