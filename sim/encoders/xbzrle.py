"""XBZRLE delta encoding of one page against its previous content, as QEMU does it (REF §2.1-2.4).

What is modelled
----------------
The byte format of QEMU's ``xbzrle_encode_buffer`` / ``xbzrle_decode_buffer`` (migration/xbzrle.c),
reimplemented from the description in REF §2 and checked byte for byte against the shared vector
file produced by QEMU's own code (``/work/shared/vectors/xbzrle-qemu.npz``):

* The encoding is a sequence of pairs ``ULEB128(zrun) ULEB128(nzrun) <nzrun new bytes>``. Runs are
  maximal; the first zrun may be 0; no trailing zrun is written; an identical page encodes to
  ``b""``. The literal bytes are the *new* bytes, not the XOR.
* ULEB128 is QEMU's 14-bit variant: 1 byte below 128, else 2 bytes; the decoder rejects a second
  byte with bit 7 set (so no 3-byte forms) and accepts non-canonical ``80 00`` = 0.
* The encoder's output limit ``dlen`` (``limit`` here; QEMU passes the page size) and all three of
  its overflow rules (REF §2.1), checked at the same points as QEMU, so the outcome (-1 or the
  length) is identical: before scanning each zero run (this fires even when only an unchanged tail
  is left, and for an identical page when ``limit < 2``), before writing an nzrun, and when the
  nzrun's literal bytes would pass the limit.
* The decoder's six rejection rules (REF §2.3) in QEMU's order, and its return value (the offset
  just after the last nzrun; 0 for empty input). Decoding works in place, like QEMU decoding
  straight into guest memory, so a rejected record leaves the nzruns *before* the offending pair
  applied to the page (``decode_into``); ``decode`` works on a copy and leaves ``old`` untouched.

Where it departs from QEMU
--------------------------
* QEMU asserts that page buffers and the length are multiples of ``sizeof(long)``; here a length
  that is not a multiple of 8 is a ``ValueError``. Pages longer than 16384 bytes are refused
  (``ValueError``) because a run could then need more than 14 bits (QEMU would assert).
* ``limit`` may be 0..page length; QEMU's ``dlen`` is not range-checked, but migration always
  passes the page size, which is the default here.
* Only the output of QEMU's generic (8-bytes-at-a-time) encoder is reproduced. The AVX-512 encoder
  is allowed by the format to emit other valid encodings; REF §2.1 notes it was never run.
* The decoder errors carry a reason naming the violated rule and the input offset; QEMU only
  returns -1.

Implementation
--------------
One implementation of the format: numba kernels (``@njit(cache=True)`` with explicit signatures,
single-threaded like QEMU's migration thread). A page is first compared 64 bytes at a time through
``uint64`` views (XOR of eight words; an unchanged block costs eight compares), and each changed
block is turned into a 64-bit "byte differs" mask (exact per-byte test plus a multiply that gathers
the eight flags of a word). The runs are then walked with count-trailing-zeros on those masks,
applying QEMU's overflow checks at QEMU's points; literal runs of 16 bytes or more are copied with
one ``memcpy``. The scalar ``encode``/``decode`` call the same kernels on one row. The batch forms
work on ``uint8[n, page_size]`` C-contiguous arrays; ``encoded_sizes`` is the same kernel with the
output writes compiled out. Measured speeds: ``benchmarks/bench_xbzrle.py``.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from sim.errors import XbzrleDecodeError

__all__ = [
    "MAX_PAGE_SIZE",
    "decode",
    "decode_page",
    "decode_batch",
    "decode_error_reason",
    "decode_into",
    "encode",
    "encode_batch",
    "encode_page",
    "encoded_sizes",
]

if sys.byteorder != "little":  # pragma: no cover - the word scans assume little-endian loads
    raise ImportError("sim.encoders.xbzrle needs a little-endian host")

#: Longest page the 14-bit ULEB128 run lengths can always describe.
MAX_PAGE_SIZE = 16384

_HI = np.uint64(0x8080808080808080)
_LO7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_MOVEMASK = np.uint64(0x0102040810204080)

# Decoder rejection codes (negative kernel results), one per rule of REF §2.3.
_E_PAIR_SHORT = -1
_E_ZRUN_ULEB = -2
_E_ZRUN_ZERO = -3
_E_ZRUN_PAGE = -4
_E_NZRUN_SHORT = -5
_E_NZRUN_ULEB = -6
_E_NZRUN_ZERO = -7
_E_NZRUN_PAGE = -8
_E_NZRUN_INPUT = -9

_REASONS = {
    _E_PAIR_SHORT: "rule 1: fewer than 2 input bytes left where a (zrun, nzrun) pair begins "
                   "(a lone trailing zrun, or truncated input)",
    _E_ZRUN_ULEB: "rule 2: zrun length is not a valid 14-bit ULEB128 "
                  "(its second byte has bit 7 set)",
    _E_ZRUN_ZERO: "rule 2: zrun of length 0 anywhere but at the start of the record",
    _E_ZRUN_PAGE: "rule 3: the zrun runs past the end of the page",
    _E_NZRUN_SHORT: "rule 4: fewer than 2 input bytes left for the nzrun "
                    "(its length plus at least one literal byte)",
    _E_NZRUN_ULEB: "rule 5: nzrun length is not a valid 14-bit ULEB128 "
                   "(its second byte has bit 7 set)",
    _E_NZRUN_ZERO: "rule 5: nzrun of length 0",
    _E_NZRUN_PAGE: "rule 6: the nzrun runs past the end of the page",
    _E_NZRUN_INPUT: "rule 6: the nzrun's literal bytes run past the end of the input",
}


def decode_error_reason(code: int) -> str:
    """The rule (REF §2.3) behind a negative code from :func:`decode_batch`."""
    return _REASONS.get(int(code), f"unknown decoder error code {code}")


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


@intrinsic
def _ctz(typingctx, x):  # type: ignore[no-untyped-def]
    """Count trailing zero bits of a non-zero uint64 (LLVM cttz, i.e. tzcnt/bsf)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.int64(x), codegen


@intrinsic
def _memcpy(typingctx, dst, doff, src, soff, count):  # type: ignore[no-untyped-def]
    """``dst[doff:doff + count] = src[soff:soff + count]`` as one llvm.memcpy (no checks)."""
    sig = types.void(dst, doff, src, soff, count)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        d = context.make_array(signature.args[0])(context, builder, args[0])
        s = context.make_array(signature.args[2])(context, builder, args[2])
        dptr = builder.gep(d.data, [args[1]])
        sptr = builder.gep(s.data, [args[3]])
        cgutils.raw_memcpy(builder, dptr, sptr, args[4], 1)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _nonzero_bytes(x):  # type: ignore[no-untyped-def]
    """Bit 7 of each byte of the result is set iff that byte of ``x`` is non-zero (exact)."""
    return (((x & _LO7) + _LO7) | x) & _HI


@njit(inline="always")
def _page_masks(o64, n64, masks):  # type: ignore[no-untyped-def]
    """Set bit t of ``masks[b]`` iff byte 64*b + t differs; False if the page is unchanged.

    ``_nonzero_bytes(x) >> 7`` has 0/1 in the low bit of each byte; multiplying by
    0x0102040810204080 moves byte k's bit to bit 56 + k without carries, so ``>> 56`` gathers them.
    """
    nwords = o64.shape[0]
    nblocks = (nwords + 7) >> 3
    anydiff = False
    for b in range(nblocks):
        w0 = b << 3
        if w0 + 8 <= nwords:
            acc = ((o64[w0] ^ n64[w0]) | (o64[w0 + 1] ^ n64[w0 + 1])
                   | (o64[w0 + 2] ^ n64[w0 + 2]) | (o64[w0 + 3] ^ n64[w0 + 3])
                   | (o64[w0 + 4] ^ n64[w0 + 4]) | (o64[w0 + 5] ^ n64[w0 + 5])
                   | (o64[w0 + 6] ^ n64[w0 + 6]) | (o64[w0 + 7] ^ n64[w0 + 7]))
            if acc == 0:
                masks[b] = 0
                continue
            m = np.uint64(0)
            for k in range(8):
                nz = _nonzero_bytes(o64[w0 + k] ^ n64[w0 + k]) >> np.uint64(7)
                m |= ((nz * _MOVEMASK) >> np.uint64(56)) << np.uint64(k << 3)
        else:
            m = np.uint64(0)
            for k in range(nwords - w0):
                nz = _nonzero_bytes(o64[w0 + k] ^ n64[w0 + k]) >> np.uint64(7)
                m |= ((nz * _MOVEMASK) >> np.uint64(56)) << np.uint64(k << 3)
        masks[b] = m
        if m != 0:
            anydiff = True
    return anydiff


@njit(inline="always")
def _next_set(masks, i, nblocks, n):  # type: ignore[no-untyped-def]
    """First changed byte index >= i, or n (end of the zero run starting at i)."""
    b = i >> 6
    if b >= nblocks:
        return n
    cur = masks[b] & (_ONES << np.uint64(i & 63))
    while cur == 0:
        b += 1
        if b >= nblocks:
            return n
        cur = masks[b]
    return (b << 6) + _ctz(cur)


@njit(inline="always")
def _next_clear(masks, i, nblocks, n):  # type: ignore[no-untyped-def]
    """First unchanged byte index >= i, or n (end of the nzrun starting at i)."""
    b = i >> 6
    cur = ~masks[b] & (_ONES << np.uint64(i & 63))
    while cur == 0:
        b += 1
        if b >= nblocks:
            return n
        cur = ~masks[b]
    k = (b << 6) + _ctz(cur)
    return k if k < n else n


@njit(inline="always")
def _encode_core(o64, n64, new, limit, out, write, masks):  # type: ignore[no-untyped-def]
    """QEMU's encoder on one page: the length, 0 (unchanged) or -1 (overflow).

    ``write`` is a compile-time constant; False computes the same result without touching ``out``.
    ``out`` needs ``limit`` bytes: nothing is written past a checked limit.
    """
    nwords = o64.shape[0]
    n = nwords << 3
    nblocks = (nwords + 7) >> 3
    if n == 0:  # QEMU's loop does not run
        return 0
    if limit < 2:  # overflow rule 1 fires before the first scan, even for an unchanged page
        return -1
    if not _page_masks(o64, n64, masks):
        return 0
    i = 0
    d = 0
    while i < n:
        if d + 2 > limit:  # overflow rule 1: before every zero-run scan (even of the tail)
            return -1
        j = _next_set(masks, i, nblocks, n)
        z = j - i
        if j == n:  # the trailing zero run is not emitted
            return d
        if write:
            if z < 128:
                out[d] = z
            else:
                out[d] = (z & 0x7F) | 0x80
                out[d + 1] = z >> 7
        d += 1 if z < 128 else 2
        if d + 2 > limit:  # overflow rule 2: before the nzrun
            return -1
        k = _next_clear(masks, j, nblocks, n)
        r = k - j
        ul = 1 if r < 128 else 2
        if d + ul + r > limit:  # overflow rule 3: the literal bytes would pass the limit
            return -1
        if write:
            if r < 128:
                out[d] = r
            else:
                out[d] = (r & 0x7F) | 0x80
                out[d + 1] = r >> 7
            d += ul
            if r < 16:
                for t in range(r):
                    out[d + t] = new[j + t]
            else:
                _memcpy(out, d, new, j, r)
            d += r
        else:
            d += ul + r
        i = k
    return d


# Explicit signatures: one compiled (and cached) version per kernel; read-only parameters also
# accept writable arrays, so read-only inputs (np.frombuffer of bytes) need no copy.
_U8_1 = types.Array(types.uint8, 1, "C")
_U8_2 = types.Array(types.uint8, 2, "C")
_U8_1R = types.Array(types.uint8, 1, "C", readonly=True)
_U8_2R = types.Array(types.uint8, 2, "C", readonly=True)
_U64_2R = types.Array(types.uint64, 2, "C", readonly=True)
_I32_1 = types.Array(types.int32, 1, "C")
_I64_1R = types.Array(types.int64, 1, "C", readonly=True)


@njit(types.void(_U8_2R, _U8_2R, _U64_2R, _U64_2R, types.int64, _U8_2, _I32_1), cache=True)
def _encode_rows(old, new, old64, new64, limit, out, lengths):  # type: ignore[no-untyped-def]
    masks = np.empty((old64.shape[1] + 7) >> 3, dtype=np.uint64)
    for p in range(old.shape[0]):
        lengths[p] = _encode_core(old64[p], new64[p], new[p], limit, out[p], True, masks)


@njit(types.void(_U64_2R, _U64_2R, types.int64, _I32_1), cache=True)
def _size_rows(old64, new64, limit, lengths):  # type: ignore[no-untyped-def]
    masks = np.empty((old64.shape[1] + 7) >> 3, dtype=np.uint64)
    unused = np.empty(1, dtype=np.uint8)  # ``new`` and ``out``: never touched with write=False
    for p in range(old64.shape[0]):
        lengths[p] = _encode_core(old64[p], new64[p], unused, limit, unused, False, masks)


@njit(inline="always")
def _read_uleb(src, i):  # type: ignore[no-untyped-def]
    """QEMU's 14-bit ULEB128 at ``src[i]`` (two bytes must be there): (value, width), width 0
    when the second byte has its continuation bit set (a 3-byte form, rejected)."""
    b = np.int64(src[i])
    if not b & 0x80:
        return b, 1
    b2 = np.int64(src[i + 1])
    if b2 & 0x80:
        return np.int64(0), 0
    return (b & 0x7F) | (b2 << 7), 2


@njit(inline="always")
def _decode_core(src, slen, page):  # type: ignore[no-untyped-def]
    """QEMU's decoder on one record, in place. Returns (result, input offset of the failure).

    result >= 0: offset after the last nzrun; < 0: one of the ``_E_*`` codes.
    """
    dlen = page.shape[0]
    i = 0
    d = 0
    while i < slen:
        if slen - i < 2:
            return _E_PAIR_SHORT, i
        count, ul = _read_uleb(src, i)
        if ul == 0:
            return _E_ZRUN_ULEB, i
        if i != 0 and count == 0:
            return _E_ZRUN_ZERO, i
        start = i
        i += ul
        d += count
        if d > dlen:
            return _E_ZRUN_PAGE, start
        if slen - i < 2:
            return _E_NZRUN_SHORT, i
        count, ul = _read_uleb(src, i)
        if ul == 0:
            return _E_NZRUN_ULEB, i
        if count == 0:
            return _E_NZRUN_ZERO, i
        start = i
        i += ul
        if d + count > dlen:
            return _E_NZRUN_PAGE, start
        if i + count > slen:
            return _E_NZRUN_INPUT, start
        for t in range(count):
            page[d + t] = src[i + t]
        d += count
        i += count
    return d, i


@njit(types.UniTuple(types.int64, 2)(_U8_1R, types.int64, _U8_1), cache=True)
def _decode_one(src, slen, page):  # type: ignore[no-untyped-def]
    return _decode_core(src, slen, page)


@njit(types.void(_U8_2R, _I64_1R, _U8_2, _I32_1), cache=True)
def _decode_rows(src, lengths, pages, result):  # type: ignore[no-untyped-def]
    for p in range(src.shape[0]):
        rc, _ = _decode_core(src[p], lengths[p], pages[p])
        result[p] = rc



# encode_page and decode_page are called, not inlined: only exact mode uses them, a call is
# nothing beside a page's encoding, and inlined they doubled the compile time of every chunk
# loop that holds them (the kernel's, the fused chunk's, the cruise's).
@njit(cache=True)
def encode_page(old64, new64, new, limit, out, masks):  # type: ignore[no-untyped-def]
    """For other compiled code (the engine's kernel): encode one page into ``out``.

    ``old64``/``new64`` are the pages as uint64 words, ``new`` the new page's bytes, ``masks`` a
    scratch ``uint64[(words + 7) // 8]``. Returns the length, 0 (unchanged) or -1 (overflow).
    """
    return _encode_core(old64, new64, new, limit, out, True, masks)


@njit(inline="always")
def literal_bytes(src, slen):  # type: ignore[no-untyped-def]
    """For other compiled code: the changed bytes a well-formed record carries (its nzruns'
    lengths summed): what the encoder copied, as against the run lengths it wrote."""
    i = 0
    total = 0
    while i + 1 < slen:
        _, ul = _read_uleb(src, i)
        if ul == 0:
            break
        i += ul
        count, ul = _read_uleb(src, i)
        if ul == 0:
            break
        i += ul + count
        total += count
    return total


@njit(cache=True)
def decode_page(src, slen, page):  # type: ignore[no-untyped-def]
    """For other compiled code: apply one record in place; QEMU's return value (< 0: rejected)."""
    rc, _ = _decode_core(src, slen, page)
    return rc


# --------------------------------------------------------------------------------------------
# Python API
# --------------------------------------------------------------------------------------------


def _check_page_size(page_size: int) -> None:
    if page_size % 8 != 0:
        raise ValueError(f"XBZRLE page length must be a multiple of 8 (got {page_size})")
    if page_size > MAX_PAGE_SIZE:
        raise ValueError(f"XBZRLE page length must be at most {MAX_PAGE_SIZE} (got {page_size})")


def _batch_arrays(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    old = np.asarray(old)
    new = np.asarray(new)
    if old.dtype != np.uint8 or new.dtype != np.uint8:
        raise TypeError("XBZRLE batches must be uint8 arrays")
    if old.ndim != 2 or old.shape != new.shape:
        raise ValueError(f"XBZRLE batches must be uint8[n, page_size] of one shape "
                         f"(got {old.shape} and {new.shape})")
    _check_page_size(old.shape[1])
    return _aligned(old), _aligned(new)


def _aligned(a: np.ndarray) -> np.ndarray:
    """C-contiguous and 8-byte aligned (for the uint64 view), copying only if needed."""
    a = np.ascontiguousarray(a)
    if a.ctypes.data % 8:
        a = a.copy()
    return a


def encode_batch(old: np.ndarray, new: np.ndarray,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encode page ``new[p]`` against ``old[p]`` for every row, with QEMU's limit (page size).

    Returns ``(lengths, out)``: ``lengths`` int32[n] with -1 for overflow, 0 for an unchanged page,
    else the encoded length; ``out`` uint8[n, page_size] whose row p starts with the encoding
    (the bytes after ``lengths[p]``, and whole rows of overflowed pages, are unspecified).
    Pass a reusable C-contiguous ``out`` of that shape to avoid allocating (and page-faulting in)
    a fresh buffer on every call.
    """
    old, new = _batch_arrays(old, new)
    n, page_size = old.shape
    lengths = np.empty(n, dtype=np.int32)
    if out is None:
        out = np.empty((n, page_size), dtype=np.uint8)
    elif (out.dtype != np.uint8 or out.shape != (n, page_size) or not out.flags.c_contiguous
          or not out.flags.writeable):
        raise ValueError(f"out must be a writable C-contiguous uint8[{n}, {page_size}] array")
    if n and page_size:
        _encode_rows(old, new, old.view(np.uint64), new.view(np.uint64), page_size, out, lengths)
    else:
        lengths[:] = 0
    return lengths, out


def encoded_sizes(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The ``lengths`` of :func:`encode_batch` (int32, -1 overflow, 0 unchanged), without output."""
    old, new = _batch_arrays(old, new)
    n, page_size = old.shape
    lengths = np.empty(n, dtype=np.int32)
    if n and page_size:
        _size_rows(old.view(np.uint64), new.view(np.uint64), page_size, lengths)
    else:
        lengths[:] = 0
    return lengths


def _row(data: bytes) -> np.ndarray:
    """A fresh, writable, aligned uint8[1, len] copy of a bytes-like object."""
    buf = np.frombuffer(data, dtype=np.uint8)  # TypeError for non-buffers
    row = np.empty((1, buf.shape[0]), dtype=np.uint8)
    row[0] = buf
    return row


def encode(old: bytes, new: bytes, limit: int | None = None) -> bytes | None:
    """QEMU's ``xbzrle_encode_buffer(old, new, len, out, limit)``.

    ``limit`` (QEMU's ``dlen``) defaults to the page length. Returns the encoding, ``b""`` if the
    pages are identical, or ``None`` on overflow (REF §2.1's three rules).
    """
    o = _row(old)
    nw = _row(new)
    page_size = nw.shape[1]
    if o.shape[1] != page_size:
        raise ValueError(f"old and new pages differ in length ({o.shape[1]} != {page_size})")
    _check_page_size(page_size)
    lim = page_size if limit is None else int(limit)
    if not 0 <= lim <= page_size:
        raise ValueError(f"limit must be in 0..{page_size} (got {limit})")
    if page_size == 0:
        return b""
    lengths = np.empty(1, dtype=np.int32)
    out = np.empty((1, page_size), dtype=np.uint8)
    _encode_rows(o, nw, o.view(np.uint64), nw.view(np.uint64), lim, out, lengths)
    rc = int(lengths[0])
    if rc < 0:
        return None
    return out[0, :rc].tobytes()


def _raise_decode(code: int, offset: int, slen: int, dlen: int) -> None:
    raise XbzrleDecodeError(
        f"invalid XBZRLE record ({slen} bytes, page {dlen} bytes) at input offset {offset}: "
        f"{decode_error_reason(code)}")


def decode_into(data: bytes, page: bytearray | np.ndarray) -> int:
    """QEMU's ``xbzrle_decode_buffer(data, len, page, len(page))``, in place.

    Returns QEMU's value: the offset just after the last nzrun (0 for empty input). On a rejected
    record raises :class:`XbzrleDecodeError`; as in QEMU, which decodes straight into guest memory,
    ``page`` then keeps the nzruns of the pairs *before* the offending one (and nothing of it).
    ``page`` is a bytearray or a writable C-contiguous uint8 numpy array.
    """
    src = _row(data)[0]
    if isinstance(page, np.ndarray):
        if page.dtype != np.uint8 or not page.flags.c_contiguous:
            raise TypeError("page must be a C-contiguous uint8 array")
        target = page.reshape(-1)
    else:
        target = np.frombuffer(page, dtype=np.uint8)
    if not target.flags.writeable:
        raise TypeError("page must be writable")
    rc, where = _decode_one(src, src.shape[0], target)
    if rc < 0:
        _raise_decode(rc, where, src.shape[0], target.shape[0])
    return int(rc)


def decode(data: bytes, old: bytes) -> bytes:
    """Apply an XBZRLE record to (a copy of) ``old`` and return the new page.

    Raises :class:`XbzrleDecodeError` if QEMU's decoder would reject the record (REF §2.3).
    """
    page = _row(old)[0]
    decode_into(data, page)
    return page.tobytes()


def decode_batch(src: np.ndarray, lengths: np.ndarray, pages: np.ndarray) -> np.ndarray:
    """Decode record ``src[p, :lengths[p]]`` into ``pages[p]`` in place, for every row.

    ``src`` uint8[n, m], ``lengths`` int[n] (0 <= lengths[p] <= m), ``pages`` uint8[n, page_size]
    C-contiguous and writable. Returns int32[n]: QEMU's return value, or a negative code for a
    rejected record (:func:`decode_error_reason` names the rule; that page keeps the pairs
    decoded before the bad one). Nothing is raised for bad records.
    """
    src = np.ascontiguousarray(src, dtype=np.uint8)
    lens = np.ascontiguousarray(lengths, dtype=np.int64)
    if src.ndim != 2 or pages.ndim != 2 or lens.shape != (src.shape[0],) \
            or pages.shape[0] != src.shape[0]:
        raise ValueError("decode_batch needs src[n, m], lengths[n] and pages[n, page_size]")
    if pages.dtype != np.uint8 or not pages.flags.c_contiguous or not pages.flags.writeable:
        raise TypeError("pages must be a writable C-contiguous uint8 array")
    if lens.size and (lens.min() < 0 or lens.max() > src.shape[1]):
        raise ValueError("lengths must lie in 0..src.shape[1]")
    result = np.empty(src.shape[0], dtype=np.int32)
    _decode_rows(src, lens, pages, result)
    return result
