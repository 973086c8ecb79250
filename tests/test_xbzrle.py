"""XBZRLE encoder/decoder: QEMU's vectors, REF §11.3 by hand, properties and a reference oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.encoders import xbzrle
from sim.errors import XbzrleDecodeError

VECTORS = Path("/work/shared/vectors/xbzrle-qemu.npz")
HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(s: str) -> bytes:
    return bytes.fromhex(s)


# ------------------------------------------------------------------------------------------
# A slow, obviously-correct oracle written from REF §2.1 / §2.3 (byte loops, no tricks).
# ------------------------------------------------------------------------------------------


def _uleb(v: int) -> bytes:
    assert 0 <= v <= 0x3FFF
    return bytes([v]) if v < 128 else bytes([(v & 0x7F) | 0x80, v >> 7])


def ref_encode(old: bytes, new: bytes, limit: int) -> bytes | None:
    n = len(new)
    out = bytearray()
    i = 0
    while i < n:
        if len(out) + 2 > limit:
            return None
        j = i
        while j < n and old[j] == new[j]:
            j += 1
        if j - i == n:
            return b""
        if j == n:
            break
        out += _uleb(j - i)
        if len(out) + 2 > limit:
            return None
        k = j
        while k < n and old[k] != new[k]:
            k += 1
        u = _uleb(k - j)
        if len(out) + len(u) + (k - j) > limit:
            return None
        out += u + new[j:k]
        i = k
    return bytes(out)


def _ref_uleb(src: bytes, i: int) -> tuple[int, int] | None:
    b = src[i]
    if b < 0x80:
        return b, 1
    if src[i + 1] & 0x80:
        return None
    return (b & 0x7F) | (src[i + 1] << 7), 2


def ref_decode(src: bytes, page: bytearray) -> int:
    """-1 on reject; page modified in place like QEMU."""
    i = d = 0
    slen, dlen = len(src), len(page)
    while i < slen:
        if slen - i < 2:
            return -1
        r = _ref_uleb(src, i)
        if r is None or (i and r[0] == 0):
            return -1
        d += r[0]
        i += r[1]
        if d > dlen or slen - i < 2:
            return -1
        r = _ref_uleb(src, i)
        if r is None or r[0] == 0:
            return -1
        count = r[0]
        i += r[1]
        if d + count > dlen or i + count > slen:
            return -1
        page[d:d + count] = src[i:i + count]
        d += count
        i += count
    return d


# ------------------------------------------------------------------------------------------
# QEMU's own vectors
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vec() -> dict[str, np.ndarray]:
    if not VECTORS.exists():
        pytest.skip(f"{VECTORS} not available")
    with np.load(VECTORS) as z:
        return {k: z[k] for k in z.files}


def test_vectors_encode_scalar(vec: dict[str, np.ndarray]) -> None:
    for p in range(vec["enc_rc"].shape[0]):
        rc = int(vec["enc_rc"][p])
        got = xbzrle.encode(vec["enc_old"][p].tobytes(), vec["enc_new"][p].tobytes())
        if rc < 0:
            assert got is None, p
        else:
            assert got == vec["enc_out"][p, :rc].tobytes(), p


def test_vectors_encode_batch_and_sizes(vec: dict[str, np.ndarray]) -> None:
    lengths, out = xbzrle.encode_batch(vec["enc_old"], vec["enc_new"])
    assert lengths.dtype == np.int32 and out.shape == vec["enc_old"].shape
    np.testing.assert_array_equal(lengths, vec["enc_rc"])
    for p in np.nonzero(lengths > 0)[0]:
        np.testing.assert_array_equal(out[p, :lengths[p]], vec["enc_out"][p, :lengths[p]])
    np.testing.assert_array_equal(xbzrle.encoded_sizes(vec["enc_old"], vec["enc_new"]), lengths)
    # a reused output buffer gives the same result
    buf = np.full_like(out, 0xA5)
    lengths2, out2 = xbzrle.encode_batch(vec["enc_old"], vec["enc_new"], out=buf)
    assert out2 is buf
    np.testing.assert_array_equal(lengths2, lengths)
    for p in np.nonzero(lengths > 0)[0]:
        np.testing.assert_array_equal(buf[p, :lengths[p]], out[p, :lengths[p]])


def test_vectors_decode(vec: dict[str, np.ndarray]) -> None:
    n_rejected = 0
    for p in range(vec["dec_rc"].shape[0]):
        src = vec["dec_src"][p, :vec["dec_len"][p]].tobytes()
        want_rc = int(vec["dec_rc"][p])
        page = bytearray(vec["dec_old"][p].tobytes())
        if want_rc < 0:
            n_rejected += 1
            with pytest.raises(XbzrleDecodeError, match="rule [1-6]"):
                xbzrle.decode_into(src, page)
            with pytest.raises(XbzrleDecodeError):
                xbzrle.decode(src, vec["dec_old"][p].tobytes())
        else:
            assert xbzrle.decode_into(src, page) == want_rc, p
            assert xbzrle.decode(src, vec["dec_old"][p].tobytes()) == bytes(page)
        # the page as QEMU left it, also after a rejection (pairs before the bad one applied)
        assert bytes(page) == vec["dec_page"][p].tobytes(), p
    assert n_rejected > 0


def test_vectors_decode_batch(vec: dict[str, np.ndarray]) -> None:
    pages = vec["dec_old"].copy()
    rc = xbzrle.decode_batch(vec["dec_src"], vec["dec_len"], pages)
    want = vec["dec_rc"]
    np.testing.assert_array_equal(rc >= 0, want >= 0)
    np.testing.assert_array_equal(rc[want >= 0], want[want >= 0])
    np.testing.assert_array_equal(pages, vec["dec_page"])
    for code in np.unique(rc[rc < 0]):
        assert xbzrle.decode_error_reason(int(code)).startswith("rule ")


# ------------------------------------------------------------------------------------------
# REF §11.3, written out by hand
# ------------------------------------------------------------------------------------------

Z16 = bytes(16)
Z4K = bytes(4096)


def _page(size: int, changes: dict[int, int]) -> bytes:
    b = bytearray(size)
    for off, v in changes.items():
        b[off] = v
    return bytes(b)


CASES = [
    # id, old, new, expected encoding (None = overflow), decoder return value
    ("V1", h("00112233445566778899aabbccddeeff"), h("0011223344ffff778899aabbccddee01"),
     h("0502ffff080101"), 16),
    ("V2", Z16, h("ab") + bytes(15), h("0001ab"), 1),
    ("V3", b"\x5a" * 16, b"\x5a" * 16, b"", None),
    ("V4", Z16, h("11220033") + bytes(12), h("0002112201" "0133"), 4),
    ("V5", Z4K, _page(4096, {200: 1, 201: 2, 202: 3, 4095: 0xEE}),
     h("c801030102" "03b41e01ee"), 4096),
    ("V6", bytes(1001) + h("05060708090a0b0c0d0e0f10111213" "6800006b006d") + bytes(3074),
     bytes(1001) + h("0102030405060708090a0b0c0d0e0f" "680000670069") + bytes(3074),
     h("e9070f" "0102030405060708090a0b0c0d0e0f" "030167" "010169"), 1022),
    ("V7", Z16, bytes([1, 0] * 8), None, None),
    ("V8", Z4K, b"\x77" * 4096, None, None),
    ("E1", Z4K, bytes(3) + b"\x01" * 4093, h("03fd1f") + b"\x01" * 4093, 4096),  # 4096 bytes
    ("E2", Z4K, b"\x01" * 4093 + bytes(3), None, None),
    ("E3", Z4K, bytes(2) + b"\x01" * 4094, None, None),
    ("E4", Z4K, bytes([1, 0, 0, 0] * 1024), h("000101") + h("030101") * 1023, 4093),
    ("E5", Z4K, bytes(1 if i % 3 == 0 else 0 for i in range(4096)), None, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_ref_11_3(case: tuple) -> None:
    name, old, new, want, dec_rc = case
    got = xbzrle.encode(old, new)
    assert got == want
    if want is not None:
        assert len(want) == {"V1": 7, "V2": 3, "V3": 0, "V4": 7, "V5": 10, "V6": 24, "E1": 4096,
                             "E4": 3072}[name]
    if want:
        page = bytearray(old)
        assert xbzrle.decode_into(want, page) == dec_rc
        assert bytes(page) == new


def test_ref_2_2_worked_example_sizes() -> None:
    old = h("00112233445566778899aabbccddeeff")
    new = h("0011223344ffff778899aabbccddee01")
    enc = xbzrle.encode(old, new)
    assert enc == h("05 02 ff ff 08 01 01".replace(" ", ""))
    assert xbzrle.encoded_sizes(np.frombuffer(old, np.uint8)[None],
                                np.frombuffer(new, np.uint8)[None]).tolist() == [7]


DECODER_ONLY = [
    ("0502ffff080101", 16),
    ("0001ab", 1),
    ("0101aa0001bb", "rule 2"),  # zrun 0 not at the start
    ("050001", "rule 5"),  # nzrun length 0
    ("0001ab05", "rule 1"),  # a trailing lone zrun
    ("1001aa", "rule 6"),  # zrun to 16 is fine (rule 3 is d > dlen); 16 + 1 > dlen 16
    ("808001aa", "rule 2"),  # ULEB second byte with bit 7 set
    ("0003aabb", "rule 6"),  # nzrun longer than the remaining input
    ("", 0),
]


@pytest.mark.parametrize("src,want", DECODER_ONLY)
def test_ref_11_3_decoder_only(src: str, want: int | str) -> None:
    page = bytearray(16)
    if isinstance(want, int):
        assert xbzrle.decode_into(h(src), page) == want
        assert xbzrle.decode(h(src), Z16) == bytes(page)
    else:
        with pytest.raises(XbzrleDecodeError, match=want):
            xbzrle.decode_into(h(src), page)
        with pytest.raises(XbzrleDecodeError, match=want):
            xbzrle.decode(h(src), Z16)


def test_decoder_details() -> None:
    # non-canonical "80 00" = 0 is accepted as the leading zrun
    assert xbzrle.decode(h("8000" "01ab"), Z16) == h("ab") + bytes(15)
    # a 2-byte nzrun length
    src = h("00" "8001") + b"\x07" * 128
    assert xbzrle.decode(src, bytes(128)) == b"\x07" * 128
    # rule 3: the zrun alone passes the page end
    with pytest.raises(XbzrleDecodeError, match="rule 3"):
        xbzrle.decode(h("1101aa"), Z16)
    # rule 4: a zrun followed by only one byte
    with pytest.raises(XbzrleDecodeError, match="rule 4"):
        xbzrle.decode(h("0001ab" "02" "01"), Z16)
    # rule 5: bad ULEB in the nzrun length
    with pytest.raises(XbzrleDecodeError, match="rule 5"):
        xbzrle.decode(h("01" "8180" "aa"), Z16)
    # rule 6: nzrun past the end of the page
    with pytest.raises(XbzrleDecodeError, match="rule 6: the nzrun runs past the end of the page"):
        xbzrle.decode(h("0f02aabb"), Z16)
    # a rejected record leaves the earlier pairs applied by decode_into, nothing by decode
    page = bytearray(16)
    with pytest.raises(XbzrleDecodeError):
        xbzrle.decode_into(h("0502ffff" "0001aa"), page)
    assert bytes(page) == bytes(5) + h("ffff") + bytes(9)
    # numpy pages work too (rows of a batch)
    pages = np.zeros((2, 16), dtype=np.uint8)
    assert xbzrle.decode_into(h("0502ffff"), pages[1]) == 7
    assert pages[1, 5] == 0xFF and not pages[0].any()
    with pytest.raises(TypeError):
        xbzrle.decode_into(h("0502ffff"), bytes(16))  # type: ignore[arg-type]


def test_encoder_limits_and_quirks() -> None:
    old, new = CASES[0][1], CASES[0][2]  # V1, 7 bytes, ends inside an nzrun
    assert xbzrle.encode(old, new, limit=7) == h("0502ffff080101")
    assert xbzrle.encode(old, new, limit=6) is None
    # an unchanged page overflows when fewer than 2 bytes of output are allowed
    assert xbzrle.encode(Z16, Z16, limit=2) == b""
    assert xbzrle.encode(Z16, Z16, limit=1) is None
    assert xbzrle.encode(Z16, Z16, limit=0) is None
    # "< 2 bytes left" before the unchanged tail: 13 changed bytes, then a 3-byte tail
    new = b"\x01" * 13 + bytes(3)
    assert xbzrle.encode(Z16, new) is None  # 15 bytes + 2 > 16
    assert xbzrle.encode(Z16, new, limit=16) is None
    assert ref_encode(Z16, new, 17) is not None
    # the same 15 bytes are fine when no tail follows
    new = bytes(1) + b"\x01" * 13 + bytes(2)
    assert xbzrle.encode(Z16, new) is None
    new = bytes(2) + b"\x01" * 14
    assert xbzrle.encode(Z16, new) == h("020e") + b"\x01" * 14
    # the literal bytes must fit
    assert xbzrle.encode(Z16, bytes(1) + b"\x01" * 15) is None  # 1 + 1 + 15 > 16
    assert xbzrle.encode(b"", b"") == b""


def test_encoder_argument_errors() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        xbzrle.encode(bytes(12), bytes(12))
    with pytest.raises(ValueError, match="differ in length"):
        xbzrle.encode(bytes(8), bytes(16))
    with pytest.raises(ValueError, match="limit"):
        xbzrle.encode(Z16, Z16, limit=17)
    with pytest.raises(ValueError, match="at most"):
        xbzrle.encode(bytes(32768), bytes(32768))
    with pytest.raises(TypeError):
        xbzrle.encode("abc", "abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        xbzrle.encode_batch(np.zeros((2, 16), np.uint8), np.zeros((3, 16), np.uint8))
    with pytest.raises(TypeError):
        xbzrle.encode_batch(np.zeros((2, 16), np.int16), np.zeros((2, 16), np.int16))
    with pytest.raises(ValueError):
        xbzrle.encode_batch(np.zeros((2, 16), np.uint8), np.zeros((2, 16), np.uint8),
                            out=np.zeros((2, 8), np.uint8))


def test_batch_shapes() -> None:
    lengths, out = xbzrle.encode_batch(np.zeros((0, 4096), np.uint8), np.zeros((0, 4096), np.uint8))
    assert lengths.shape == (0,) and out.shape == (0, 4096)
    # a non-contiguous input is accepted (copied)
    old = np.zeros((4, 32), np.uint8)
    new = old.copy()
    new[:, 3] = 9
    lengths, _ = xbzrle.encode_batch(old[::2], new[::2])
    assert lengths.tolist() == [3, 3]


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------

SIZES = [8, 16, 24, 32, 64, 136, 256, 4096]


@st.composite
def page_pairs(draw: st.DrawFn, size: int | None = None) -> tuple[bytes, bytes]:
    size = draw(st.sampled_from(SIZES)) if size is None else size
    kind = draw(st.sampled_from(["binary", "runs", "runs", "density"]))
    if kind == "binary" and size <= 256:
        return (draw(st.binary(min_size=size, max_size=size)),
                draw(st.binary(min_size=size, max_size=size)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = draw(st.sampled_from(["random", "zero", "const", "counter"]))
    if base == "random":
        old = rng.integers(0, 256, size, dtype=np.uint8)
    elif base == "zero":
        old = np.zeros(size, np.uint8)
    elif base == "const":
        old = np.full(size, 0x5A, np.uint8)
    else:
        old = np.arange(size, dtype=np.uint64).astype(np.uint8)
    new = old.copy()
    if kind == "density":
        p = draw(st.sampled_from([0.001, 0.01, 0.1, 0.33, 0.5, 0.75, 1.0]))
        m = rng.random(size) < p
        new[m] ^= rng.integers(1, 256, int(m.sum()), dtype=np.uint8)
    else:
        runs = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 300),
                                       st.integers(1, 255)), max_size=12))
        for start, length, x in runs:
            new[start:start + length] ^= x
    return old.tobytes(), new.tobytes()


@HYP
@given(page_pairs())
def test_round_trip_and_oracle(pair: tuple[bytes, bytes]) -> None:
    old, new = pair
    enc = xbzrle.encode(old, new)
    assert enc == ref_encode(old, new, len(new))
    size = xbzrle.encoded_sizes(np.frombuffer(old, np.uint8)[None],
                                np.frombuffer(new, np.uint8)[None])[0]
    if enc is None:
        assert size == -1
        return
    assert size == len(enc) <= len(new)
    assert xbzrle.decode(enc, old) == new
    page = bytearray(old)
    got = xbzrle.decode_into(enc, page)
    assert bytes(page) == new
    assert got == (0 if not enc else max(i + 1 for i in range(len(new)) if old[i] != new[i]))


@HYP
@given(page_pairs(), st.integers(0, 4096))
def test_limits_match_oracle(pair: tuple[bytes, bytes], limit: int) -> None:
    old, new = pair
    limit = min(limit, len(new))
    assert xbzrle.encode(old, new, limit=limit) == ref_encode(old, new, limit)


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, or a valid encoding with a mutation."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    old, new = draw(page_pairs(size=draw(st.sampled_from([16, 64, 256]))))
    enc = bytearray(xbzrle.encode(old, new, limit=len(new)) or b"")
    op = draw(st.sampled_from(["none", "flip", "truncate", "append", "insert"]))
    if enc and op == "flip":
        i = draw(st.integers(0, len(enc) - 1))
        enc[i] ^= draw(st.integers(1, 255))
    elif enc and op == "truncate":
        del enc[draw(st.integers(0, len(enc) - 1)):]
    elif op == "append":
        enc += draw(st.binary(min_size=1, max_size=4))
    elif op == "insert":
        i = draw(st.integers(0, len(enc)))
        enc[i:i] = draw(st.binary(min_size=1, max_size=3))
    return bytes(enc)


@settings(max_examples=300, deadline=None)
@given(records(), st.one_of(st.binary(max_size=300), st.integers(0, 300).map(bytes)))
def test_decode_fuzz(src: bytes, old: bytes) -> None:
    page = bytearray(old)
    want_page = bytearray(old)
    want = ref_decode(src, want_page)
    try:
        got = xbzrle.decode_into(src, page)
    except XbzrleDecodeError:
        got = -1
    assert got == want
    assert page == want_page
    try:
        out = xbzrle.decode(src, old)
    except XbzrleDecodeError:
        assert want == -1
    else:
        assert out == bytes(want_page) and len(out) == len(old)


@settings(max_examples=25, deadline=None)
@given(st.lists(page_pairs(size=256), min_size=1, max_size=20))
def test_batch_equals_scalar(pairs: list[tuple[bytes, bytes]]) -> None:
    old = np.array([np.frombuffer(o, np.uint8) for o, _ in pairs])
    new = np.array([np.frombuffer(n, np.uint8) for _, n in pairs])
    lengths, out = xbzrle.encode_batch(old, new)
    np.testing.assert_array_equal(xbzrle.encoded_sizes(old, new), lengths)
    for p, (o, n) in enumerate(pairs):
        enc = xbzrle.encode(o, n)
        assert lengths[p] == (-1 if enc is None else len(enc))
        if enc:
            assert out[p, :lengths[p]].tobytes() == enc
    src = np.zeros_like(out)
    src[lengths > 0] = out[lengths > 0]
    pages = old.copy()
    rc = xbzrle.decode_batch(src, np.maximum(lengths, 0), pages)
    ok = lengths >= 0
    np.testing.assert_array_equal(pages[ok], new[ok])
    assert (rc[ok] >= 0).all()


def test_batch_equals_scalar_4k(rng: np.random.Generator) -> None:
    n = 64
    old = rng.integers(0, 256, (n, 4096), dtype=np.uint8)
    new = old.copy()
    for p in range(n):
        m = rng.random(4096) < [0.0, 0.001, 0.02, 0.2, 0.5, 0.9][p % 6]
        new[p, m] ^= rng.integers(1, 256, int(m.sum()), dtype=np.uint8)
    lengths, out = xbzrle.encode_batch(old, new)
    np.testing.assert_array_equal(xbzrle.encoded_sizes(old, new), lengths)
    for p in range(n):
        enc = xbzrle.encode(old[p].tobytes(), new[p].tobytes())
        assert enc == ref_encode(old[p].tobytes(), new[p].tobytes(), 4096)
        assert lengths[p] == (-1 if enc is None else len(enc))
        if enc:
            assert out[p, :lengths[p]].tobytes() == enc
