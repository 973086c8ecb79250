"""The per-page inner loop of one RAM section chunk, compiled with numba.

One call sends pages from the migration bitmap ``B`` in scan order, starting at the cursor, until
the window's byte budget is spent, the chunk's time limit is reached, or no page is pending (REF
§1.2–1.3). Guest writes that fall inside the chunk are applied in time order *between* page sends,
so every page goes out with exactly the content it had when it was sent, and every write lands in
the dirty log ``D`` or not by QEMU's clear-chunk rule (REF §1.3, §1.8 step 6). A Python loop per
page would be far too slow for TiB guests; this is one compiled pass.

Arguments come in groups (tuples), each one fact of the migration, so a call reads as what it is:

* ``guest = (dirty_bits, dirty_words, dirty_count, zero_bits, version, mem, mem64)``: the guest's
  pages and KVM's dirty log ``D``: bit-packed, and its words that are not empty listed in the
  order they were first dirtied (so a sync walks what was dirtied, never all of RAM);
* ``bitmap = (pending_bits, block_count, chunk_cleared, clear_shift)``: the migration bitmap
  ``B``, bit-packed, with its pending count per block of ``2**BLOCK_SHIFT`` pages;
* ``writes = (t, page, seed, zero_pattern, count, pattern, write_size, word_size, row, rows)``:
  the buffered guest writes in time order and what a write does to a page
  (:mod:`sim.engine.content`); ``count``: a write bumps its page's ``version``
  (:attr:`sim.guest.Guest.counts_versions`: not while nothing can read versions);
  in exact mode a write whose ``row`` is >= 0 sets the page to ``rows[row]`` instead (a replay's
  captured versions, :mod:`sim.replay`), and one below -1 writes ``-2 - row`` bytes in the
  pattern (:func:`sim.workloads.sized_row`: a replayed page's own size of write);
* ``at = (w_next, cursor, n_pending, started)``: where the writes, the scan and the round are;
* ``window = (t0, rate, byte_budget, t_limit)``: the chunk's start, link share and limits;
* ``wire = (raw_bytes, zero_bytes, xbzrle_header, page_size, detect_zero)``: record sizes;
* ``cache = (address, age, version, content, content64, xb_sizes)``: the XBZRLE page cache's
  arrays (:class:`sim.encoders.cache.XbzrleCache`) and the modelled size table;
* ``mode = (xbzrle_on, cache_on, last_stage, generation, stop_after_encoded, exact)``;
* ``plugins = (flags, sizes, counts)``: plug-in encoders in force;
* ``cpu_costs``, ``counters``, and ``dest = (dest_mem, enc_out, received, masks)``: exact mode's
  destination RAM, encoder output and encoder scratch (one bit a word of a page), and the
  pages the destination has received.

Plug-in encoders (DESIGN §9) in force are rows of ``plugins[0]`` (needs_previous, record header
bytes, destination cannot decode) in their order. They get the pages that the zero test and
XBZRLE leave for raw; a delta plug-in (needs_previous) only cache hits that XBZRLE did not take.
In modelled mode their sizes come from ``plugins[1]`` (like ``xb_sizes``) and ``plugins[2][j]``
counts (records, bytes). In exact mode a plug-in is Python code: the chunk stops *before*
accounting such a page and returns it as ``plugin_page`` (with the cache slot of a hit as
``plugin_slot``, else -1); the caller encodes it and calls again.

``cpu_costs`` is the source thread's time (seconds): per page scanned, per raw page copied, per
XBZRLE comparison, per XBZRLE output byte; then the destination's load time per raw, zero and
XBZRLE record, 1.0 when both ends share one core, and the destination's first touch of a page
(``dest[2]`` marks the pages it received). The threads and the link overlap (the
socket buffers), so a page's send completes at ``max(wire time, source time, destination
time)`` accumulated over the chunk (source + destination when they share a core): the slowest
of the three sets the pace.

Counters are named in :data:`COUNTERS`; outside this module they are read and added by name
(:class:`sim.engine.state.PassCounters`).

Model notes (where this departs from QEMU):
* QEMU checks the 50 ms chunk limit every 64 pages; we check before every page.
* Page order is ascending address in one RAMBlock (a guest is one block, ``pc.ram``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array

from .. import bits
from ..encoders.cache import HIT, MISS_INSERTED, MISS_NOT_INSERTED, ZERO_INSERTED, classify_page
from ..encoders.xbzrle import decode_page, encode_page, literal_bytes
from ..workloads.draws import steady_writes
from .content import apply_write

# Indices into the counters array the kernel updates in place (names: COUNTERS, same order).
C_NORMAL = 0  # pages sent raw (includes XBZRLE misses and overflows)
C_ZERO = 1  # zero-page records
C_XBZRLE = 2  # cache hits (encoded + unchanged + overflowed), QEMU's xbzrle "pages"
C_XBZRLE_BYTES = 3  # QEMU's xbzrle "bytes": 3 + n per record, 4096 per overflow
C_CACHE_MISS = 4
C_OVERFLOW = 5
C_ENCODED = 6  # XBZRLE records actually sent
C_UNCHANGED = 7  # hits with nothing to send
C_BYTES = 8  # wire bytes
C_PAGES_SENT = 9  # normal + zero + encoded + plug-in records (what the send loop reports)
C_DECODE_ERRORS = 10  # exact mode: records the destination's decoder rejected (a model bug)

BLOCK_SHIFT = 12  # the scan skips blocks of 4096 pages with nothing pending

#: the counters' names, in index order
COUNTERS = ("normal_pages", "zero_pages", "xbzrle_pages", "xbzrle_bytes", "xbzrle_cache_miss",
            "xbzrle_overflow", "xbzrle_records", "unchanged_pages", "wire_bytes", "pages_sent",
            "decode_errors")
N_COUNTERS = len(COUNTERS)


@intrinsic
def borrowed(typingctx, arr):
    """The array ``arr`` without its reference count (a null meminfo): numba counts a
    reference to every array each time a tuple of arrays is built or unpacked, atomically; a
    chunk's inlined calls do that some hundred times, which took half the cruise's time. The
    arrays stay alive: the caller holds them for the whole call, and the views go with it."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = make_array(sig.args[0])(context, builder, value=args[0])
        out = make_array(sig.return_type)(context, builder)
        for field in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(out, field, getattr(ary, field))
        out.meminfo = cgutils.get_null_value(out.meminfo.type)
        out.parent = cgutils.get_null_value(out.parent.type)
        return out._getvalue()

    return arr(arr), codegen


@njit(inline="always")
def _sample(shape, writes_since, page, version):
    """The cell ``(k, j)`` of a size table of ``shape`` for a page written ``writes_since``
    times since it was cached: ``k`` writes (the last row for more), sample ``j`` picked by a hash
    of (page, version) so runs are repeatable."""
    k = writes_since
    if k >= shape[0]:
        k = shape[0] - 1
    h = (np.uint64(page) * np.uint64(0x9E3779B97F4A7C15)
         + np.uint64(version) * np.uint64(0xBF58476D1CE4E5B9))
    h ^= h >> np.uint64(31)
    return k, np.int64(h % np.uint64(shape[1]))


@njit(cache=True)
def _xbzrle_size(sizes, writes_since, page, version):
    """Encoded size for a page written ``writes_since`` times since it was cached.

    ``sizes[k, j]`` holds sizes the real encoder produced for ``k`` writes of the workload's
    pattern (-1 = overflow), at the cell :func:`_sample` picks.
    """
    k, j = _sample(sizes.shape, writes_since, page, version)
    return sizes[k, j]


@njit(inline="always")
def _apply_write(k, dirty_bits, dirty_words, dirty_count, zero_bits, version, mem,
                 pending_bits, chunk_cleared, clear_shift, w_page, w_seed, zero_pattern, count,
                 pattern, write_size, word_size, w_row, rows, exact):
    """Write ``k`` of the buffer lands (see :func:`send_chunk`). The arrays come one by
    one, unpacked once by the caller: unpacking tuples of arrays once a write counts
    references on each, which cost more than the write."""
    p = w_page[k]
    if count:  # a random access, a cache miss in a fleet: skipped when nothing reads versions
        version[p] += 1
    if zero_pattern:
        bits.put(zero_bits, p)
    else:
        bits.drop(zero_bits, p)
    if exact:
        r = w_row[k] if k < w_row.shape[0] else -1  # empty: no write sets a captured version
        if r >= 0:
            mem[p][:] = rows[r]
        else:  # -1: the workload's write size; below, a size of its own (sized_row)
            apply_write(mem[p], pattern, write_size if r == -1 else -2 - r, word_size,
                        w_seed[k])
    # The write is absorbed (KVM log cleared later) only while the page still waits in B and
    # its clear-chunk has not been re-armed this pass; otherwise it dirties D (REF §1.3).
    if not (bits.test(pending_bits, p) and not chunk_cleared[p >> clear_shift]) \
            and not bits.test(dirty_bits, p):
        w = p >> 6
        if dirty_bits[w] == 0:  # the word's first dirty page since the last sync lists it
            dirty_words[dirty_count[0]] = w
            dirty_count[0] += 1
        bits.put(dirty_bits, p)


@njit(inline="always")
def _take(pending_bits, block_count, p):
    """Page ``p`` leaves ``B`` (it is being sent)."""
    bits.drop(pending_bits, p)
    block_count[p >> BLOCK_SHIFT] -= 1


@njit(inline="always")
def _send_raw(p, raw_bytes, counters, exact, mem, dest):
    """A raw page record: counted as ``normal``; in exact mode the destination gets the bytes."""
    counters[C_NORMAL] += 1
    counters[C_PAGES_SENT] += 1
    if exact:
        dest[p, :] = mem[p]
    return raw_bytes


@njit(inline="always")
def _destination_costs(cpu_costs):
    """The destination's costs per raw, zero and XBZRLE record, shared core (1.0), first touch,
    and whether any is set: without them (no host profile sets them) its time is not kept at
    all, each branch on it predicted, so the common case runs as fast as before it existed."""
    d_raw, d_zero, d_xbzrle, d_first = cpu_costs[4], cpu_costs[5], cpu_costs[6], cpu_costs[8]
    on = d_raw > 0.0 or d_zero > 0.0 or d_xbzrle > 0.0 or d_first > 0.0
    return d_raw, d_zero, d_xbzrle, cpu_costs[7], d_first, on


@njit(inline="always")
def _first_touch(received, p, cost):
    """The destination's first write to page ``p`` of its RAM (a page fault, a fresh page):
    ``cost`` once per page, when it is modelled (else ``received`` is a 1-bit stand-in)."""
    if cost <= 0.0 or bits.test(received, p):
        return 0.0
    bits.put(received, p)
    return cost


@njit(inline="always")
def _next_pending(pending_bits, block_count, cursor, n):
    """The first pending page at or after ``cursor`` in scan order, wrapping at the end of RAM
    (there must be one); also whether the scan wrapped. Empty blocks and words are skipped."""
    wrapped = False
    while True:
        if block_count[cursor >> BLOCK_SHIFT] == 0:
            cursor = ((cursor >> BLOCK_SHIFT) + 1) << BLOCK_SHIFT
        else:
            q = bits.lowest_at_or_after(pending_bits, cursor, n)
            if q >= 0:
                return q, wrapped
            cursor = ((cursor >> 6) + 1) << 6
        if cursor >= n:
            cursor = 0
            wrapped = True


@njit(inline="always")
def _is_zero(row64):
    for i in range(row64.shape[0]):  # noqa: SIM110 - a compiled loop, no generator
        if row64[i] != 0:
            return False
    return True


@njit(inline="always")
def _plugin_modelled(p, hit, version, cache_version, plugins, counters, last_stage):
    """Modelled mode: the first plug-in that takes page ``p``; returns (wire bytes, taken,
    stop). A delta plug-in takes only a cache hit (``hit`` >= 0) that XBZRLE did not take."""
    flags, sizes, counts = plugins
    for j in range(flags.shape[0]):
        if flags[j, 0] != 0 and hit < 0:
            continue  # a delta encoder needs the page as last sent
        if flags[j, 0] != 0:
            since = np.int64(version[p]) - np.int64(cache_version[hit])
            enc = 0 if since == 0 else _xbzrle_size(sizes[j], since, p, version[p])
        else:
            enc = _xbzrle_size(sizes[j], np.int64(version[p]), p, version[p])
        if enc < 0:
            continue  # "not for this encoder"
        if enc == 0:
            counters[C_UNCHANGED] += 1
            return 0, True, False
        size = flags[j, 1] + enc
        counts[j, 0] += 1
        counts[j, 1] += size
        counters[C_PAGES_SENT] += 1
        if hit >= 0 and not last_stage:
            cache_version[hit] = version[p]
        return size, True, flags[j, 2] != 0
    return 0, False, False


@njit(inline="always")
def xbzrle_cpu(enc, changed, page_size, compare, per_byte):
    """The source's seconds to XBZRLE-encode one page: the comparison with the cached copy,
    plus ``per_byte`` for each byte of the record that is not a changed byte. Those are the run
    lengths, each written where the encoder's word-at-a-time loops stop; the changed bytes are
    copied (memcpy-fast). An overflow (``enc < 0``) costs the whole page. Against QEMU's encoder
    (REF §11.2's five cases) within 11%; charging every encoded byte alike put pages written in a
    few clustered runs at 3x QEMU's time."""
    return compare + (page_size if enc < 0 else enc - changed) * per_byte


@njit(inline="always")
def _xbzrle_hit(p, slot, guest, cache, wire, mode, cpu_costs, counters, dest_mem, enc_out,
                masks):
    """A cache hit with XBZRLE in force: encode against the cached copy (REF §2.6). Returns
    (wire bytes, leftover for raw, stop the chunk, CPU seconds)."""
    version, mem, mem64 = guest[4], guest[5], guest[6]
    _, _, cache_version, cache_data, cache64, xb_sizes, xb_changed = cache
    page_size, xbzrle_header = wire[3], wire[2]
    last_stage, stop_after_encoded, exact = mode[2], mode[4], mode[5]
    counters[C_XBZRLE] += 1
    changed = 0
    if exact:
        enc = encode_page(cache64[slot], mem64[p], mem[p], page_size, enc_out, masks)
        if enc > 0:
            changed = literal_bytes(enc_out, enc)
    else:
        since = np.int64(version[p]) - np.int64(cache_version[slot])
        enc = 0
        if since != 0:
            k, j = _sample(xb_sizes.shape, since, p, version[p])
            enc = xb_sizes[k, j]
            changed = xb_changed[k, j]  # the same sample's changed bytes (0 unless enc > 0)
    cpu = xbzrle_cpu(enc, changed, page_size, cpu_costs[2], cpu_costs[3])
    if enc == 0:
        counters[C_UNCHANGED] += 1  # nothing sent; the scan moves on
        return 0, False, False, cpu
    if not last_stage:
        cache_version[slot] = version[p]
        if exact:
            cache_data[slot, :] = mem[p]
    if enc < 0:
        counters[C_OVERFLOW] += 1
        counters[C_XBZRLE_BYTES] += page_size
        return 0, True, False, cpu
    counters[C_XBZRLE_BYTES] += 3 + enc
    counters[C_ENCODED] += 1
    counters[C_PAGES_SENT] += 1
    if stop_after_encoded:
        return xbzrle_header + enc, False, True, cpu
    if exact and decode_page(enc_out, enc, dest_mem[p]) < 0:
        counters[C_DECODE_ERRORS] += 1
    return xbzrle_header + enc, False, False, cpu


@njit(cache=True)
def send_chunk(guest, bitmap, writes, at, window, wire, cache, mode, plugins, cpu_costs,
               counters, dest):
    """Send one chunk. Returns ``(t_end, cursor, w_next, n_pending, started, bytes,
    plugin_page, plugin_slot)``.

    Writes with ``t < t_end`` are applied before returning; later ones stay buffered.
    ``started``: the scan has completed its first round, so XBZRLE and the cache are in use.

    With ``exact``, writes change the real bytes, XBZRLE runs the real encoder against the
    cached copy and the destination applies every record (XBZRLE through the real decoder);
    otherwise sizes come from ``xb_sizes``.

    Plug-ins and CPU costs: see the module notes.

    ``stop_after_encoded``: the destination cannot parse XBZRLE records, so the chunk ends after
    the first one (the caller fails the migration there); so does an undecodable plug-in's."""
    dirty_bits, dirty_words, dirty_count, zero_bits, version, mem, mem64 = guest
    pending_bits, block_count, chunk_cleared, clear_shift = bitmap
    w_t, w_page, w_seed, zero_pattern, count, pattern, write_size, word_size, w_row, rows = \
        writes
    w_next, cursor, n_pending, started = at
    t0, rate, byte_budget, t_limit = window
    raw_bytes, zero_bytes, detect_zero = wire[0], wire[1], wire[4]
    address, age, cache_version, cache_data = cache[0], cache[1], cache[2], cache[3]
    xbzrle_on, cache_on, last_stage, generation, exact = mode[0], mode[1], mode[2], mode[3], mode[5]
    dest_mem, enc_out, received, masks = dest
    n = version.shape[0]
    t = t0
    sent = 0.0
    mask = address.shape[0] - 1
    n_w = w_t.shape[0]
    n_pl = plugins[0].shape[0]
    cpu = dcpu = 0.0  # the source's and the destination's time for the chunk's records
    cpu_page, cpu_copy = cpu_costs[0], cpu_costs[1]
    d_raw, d_zero, d_xbzrle, shared, d_first, dest_on = _destination_costs(cpu_costs)
    plugin_page = plugin_slot = -1
    while True:
        # Guest writes that happen before this page's send starts.
        while w_next < n_w and w_t[w_next] < t:
            _apply_write(w_next, dirty_bits, dirty_words, dirty_count, zero_bits, version, mem,
                         pending_bits, chunk_cleared, clear_shift, w_page, w_seed, zero_pattern,
                         count, pattern, write_size, word_size, w_row, rows, exact)
            w_next += 1
        if n_pending == 0 or sent >= byte_budget or t >= t_limit:
            break
        # Next pending page from the cursor, wrapping; the first wrap starts XBZRLE (REF §2.6).
        cursor, wrapped = _next_pending(pending_bits, block_count, cursor, n)
        started = started or wrapped
        p = cursor
        chunk_cleared[p >> clear_shift] = True
        _take(pending_bits, block_count, p)
        n_pending -= 1
        cursor += 1
        if cursor == n:
            cursor = 0
            started = True
        size = 0
        cpu += cpu_page
        hit = -1  # cache slot of a hit XBZRLE did not take
        leftover = False  # not sent yet: plug-ins, else raw
        stop = False
        zero_record = detect_zero and (_is_zero(mem64[p]) if exact else bits.test(zero_bits, p))
        outcome = -1  # no cache decision: the cache is off or XBZRLE has not started
        slot = p & mask
        if cache_on and started:
            outcome = classify_page(address, age, p, zero_record, generation, last_stage, True)
            if outcome == ZERO_INSERTED or outcome == MISS_INSERTED:  # noqa: SIM109 - compiled
                cache_version[slot] = version[p]
        if zero_record:
            size = zero_bytes
            if dest_on:
                dcpu += d_zero
            counters[C_ZERO] += 1
            counters[C_PAGES_SENT] += 1
            if exact:
                dest_mem[p, :] = 0
                if outcome == ZERO_INSERTED:
                    cache_data[slot, :] = 0  # a sent zero page refreshes the cache
        elif outcome == MISS_INSERTED or outcome == MISS_NOT_INSERTED:  # noqa: SIM109 - compiled
            if xbzrle_on:
                counters[C_CACHE_MISS] += 1
            if exact and outcome == MISS_INSERTED:
                cache_data[slot, :] = mem[p]
            leftover = True
        elif outcome == HIT and not xbzrle_on:
            hit = slot  # a delta plug-in's turn
            leftover = True
        elif outcome == HIT:
            size, leftover, stop, cost = _xbzrle_hit(p, slot, guest, cache, wire, mode,
                                                     cpu_costs, counters, dest_mem, enc_out,
                                                     masks)
            cpu += cost
            if dest_on and size > 0:
                dcpu += d_xbzrle
        else:
            leftover = True
        if leftover and n_pl > 0:
            if exact:
                plugin_page = p
                plugin_slot = hit
                break
            size, taken, stop = _plugin_modelled(p, hit, version, cache_version, plugins,
                                                 counters, last_stage)
            leftover = not taken
            if taken and size > 0:
                dcpu += d_raw  # a plug-in's record loads like a raw page (an assumption)
        if leftover:
            size = _send_raw(p, raw_bytes, counters, exact, mem, dest_mem)
            cpu += cpu_copy
            if dest_on:
                dcpu += d_raw + _first_touch(received, p, d_first)
        sent += size
        if dest_on:
            t = t0 + max(sent / rate, cpu + dcpu if shared > 0 else max(cpu, dcpu))
        else:
            t = t0 + max(sent / rate, cpu)
        if stop:
            break
    counters[C_BYTES] += np.int64(sent)
    return t, cursor, w_next, n_pending, started, sent, plugin_page, plugin_slot


@njit(cache=True)
def apply_writes(guest, bitmap, writes, w_next, t_end, exact):
    """Apply buffered writes with ``t < t_end`` while nothing is being sent (idle or stopped)."""
    dirty_bits, dirty_words, dirty_count, zero_bits, version, mem, _ = guest
    pending_bits, _, chunk_cleared, clear_shift = bitmap
    w_t, w_page, w_seed, zero_pattern, count, pattern, write_size, word_size, w_row, rows = \
        writes
    n_w = w_t.shape[0]
    while w_next < n_w and w_t[w_next] < t_end:
        _apply_write(w_next, dirty_bits, dirty_words, dirty_count, zero_bits, version, mem,
                     pending_bits, chunk_cleared, clear_shift, w_page, w_seed, zero_pattern,
                     count, pattern, write_size, word_size, w_row, rows, exact)
        w_next += 1
    return w_next


@njit(cache=True)
def sync_bitmap(bitmap, guest):
    """B := B ∪ D, D := ∅, a word (64 pages) at a time, walking only the words D lists.
    Returns the pages newly pending."""
    pending_bits, block_count, _, _ = bitmap
    dirty_bits, dirty_words, dirty_count = guest[0], guest[1], guest[2]
    newly = 0
    for i in range(dirty_count[0]):
        w = dirty_words[i]
        new = dirty_bits[w] & ~pending_bits[w]
        dirty_bits[w] = 0
        pending_bits[w] |= new
        n = bits.popcount(new)
        block_count[w >> (BLOCK_SHIFT - 6)] += n
        newly += n
    dirty_count[0] = 0
    return newly


@njit(cache=True)
def postcopy_chunk(bitmap, zero_bits, writes, at, window, sizes, dest_written, stats,
                   vcpu_until):
    """Post-copy after the switch (REF §5.1): the destination runs the guest while the source
    pushes the missing pages (``B``) in scan order. A guest write to a missing page is a
    remote fault: the page is requested over the return path and sent at once (``fault_bytes``
    on the link), and the vCPU that wrote stalls ``fault_cost`` seconds. ``stats`` accumulates
    (faults, stall seconds, background pages, wire bytes, writes seen).

    Writes go to the vCPUs in turn (``stats[4]`` counts them); ``vcpu_until[v]`` is when vCPU
    ``v``'s last stall ends. A vCPU is stalled or not: a fault while it is still stalled only
    extends its stall, so the stall seconds are the length of the union of each vCPU's stall
    intervals, at most the wall time per vCPU.

    ``at = (w_next, cursor, n_pending)``, ``window = (t0, rate, t_limit)``, ``sizes =
    (raw_bytes, zero_bytes, fault_bytes, fault_cost, follow)``; ``follow``: the background scan
    continues after a faulted page (no preempt channel). Returns ``(t_end, cursor, w_next,
    n_pending)``.

    Model note: the guest's later writes are not delayed by its stalls (the write clock is
    fixed), so with many faults the fault count is an upper bound; reads are not modelled.
    """
    pending_bits, block_count = bitmap[0], bitmap[1]
    w_t, w_page = writes[0], writes[1]
    w_next, cursor, n_pending = at
    t0, rate, t_limit = window
    raw_bytes, zero_bytes, fault_bytes, fault_cost, follow = sizes
    n = dest_written.shape[0]
    n_w = w_t.shape[0]
    n_vcpus = vcpu_until.shape[0]
    sent = 0.0
    t = t0
    while True:
        while w_next < n_w and w_t[w_next] < t:
            p = w_page[w_next]
            v = int(stats[4]) % n_vcpus
            stats[4] += 1.0
            dest_written[p] = True
            if bits.test(pending_bits, p):
                _take(pending_bits, block_count, p)
                n_pending -= 1
                stats[0] += 1.0
                start = max(w_t[w_next], vcpu_until[v])
                end = w_t[w_next] + fault_cost
                if end > start:
                    stats[1] += end - start
                    vcpu_until[v] = end
                sent += fault_bytes
                t = t0 + sent / rate
                if follow:  # one page search: the scan goes on after the requested page
                    cursor = p + 1 if p + 1 < n else 0
            w_next += 1
        if n_pending == 0 or t >= t_limit:
            break
        cursor, _ = _next_pending(pending_bits, block_count, cursor, n)
        p = cursor
        _take(pending_bits, block_count, p)
        n_pending -= 1
        sent += zero_bytes if bits.test(zero_bits, p) else raw_bytes
        stats[2] += 1.0
        t = t0 + sent / rate
    stats[3] += sent
    return t, cursor, w_next, n_pending


#: :func:`send_chunk` compiled into its caller: a call of a compiled function passes ~50 arrays
#: and counts a reference to each in and out, which cost more than a small chunk's own work
_send_chunk_inline = njit(inline="always")(send_chunk.py_func)
_steady_writes_inline = njit(inline="always")(steady_writes.py_func)


# --- one pre-copy chunk in one call, its writes drawn here ---------------------------------------
# :meth:`sim.engine.pipeline.Pipeline.send` for the common case (modelled content, no plug-in
# encoders, a workload whose writes :mod:`sim.workloads.draws` reproduces), with the same
# arithmetic in the same order, so every table is the same. It exists for speed: a fleet sends
# hundreds of thousands of 50 ms chunks of a dozen writes each, and the Python around a chunk
# (drawing with numpy, a call with argument tuples) cost several times the chunk's own work.

#: what :func:`draw_and_send` reports: sent, or why nothing happened (the caller fixes it and
#: calls again)
SENT, DRAWS_SHORT, WRITES_FULL = 0, 1, 2


@njit(inline="always")
def draw_then_send(t_draw, c0, until, scale, count, w_next, cursor, n_pending, round_done,
                   t0, rate, byte_budget, t_limit, last_stage, generation, overhead,
                   draws, guest, bitmap, content, wire, cache, flags, plugins, cpu_costs,
                   counters, dest):
    """:func:`draw_and_send`'s work, compiled into its caller (:func:`draw_and_send`, and the
    cruise's loop, :func:`sim.engine.cruise.cruise_turns`): the argument groups come as tuples
    built once, not once a chunk. ``draws = (raw, at, params, t_buf, p_buf)``, ``content =
    (seed, zero_pattern, count, pattern, write_size, word_size, row, rows)``, ``flags = (xbzrle_on,
    cache_on)``; the others as :func:`send_chunk` takes them."""
    raw, at, params, t_buf, p_buf = draws
    if w_next > 0:
        ahead = count - w_next
        for i in range(ahead):
            t_buf[i] = t_buf[w_next + i]
            p_buf[i] = p_buf[w_next + i]
        count, w_next = ahead, 0
    c1 = c0
    if t_draw > until:
        drawn, c1 = _steady_writes_inline(raw, at, params, until, c0, t_draw, scale, t_buf,
                                          p_buf, count)
        if drawn < 0:
            status = WRITES_FULL if drawn == -1 else DRAWS_SHORT
            return status, count, w_next, c1, t0, cursor, n_pending, round_done, 0.0, 0
        count = drawn
    seed, zero_pattern, count_versions, pattern, write_size, word_size, row, rows = content
    writes = (t_buf[:count], p_buf[:count], seed, zero_pattern, count_versions, pattern,
              write_size, word_size, row, rows)
    unchanged, pages = counters[C_UNCHANGED], counters[C_PAGES_SENT]
    t_end, cursor, w_next, n_pending, round_done, sent, _, _ = _send_chunk_inline(
        guest, bitmap, writes, (w_next, cursor, n_pending, round_done),
        (t0, rate, byte_budget, t_limit), wire, cache,
        (flags[0], flags[1], last_stage, generation, False, False),
        plugins, cpu_costs, counters, dest)
    if sent > 0 or counters[C_UNCHANGED] > unchanged:
        sent += overhead
        counters[C_BYTES] += np.int64(overhead)
        t_end += overhead / rate
    return (SENT, count, w_next, c1, t_end, cursor, n_pending, round_done, sent,
            counters[C_PAGES_SENT] - pages)


@njit(cache=True)
def draw_and_send(t_draw, c0, until, scale, count, w_next, cursor, n_pending, round_done,
                  t0, rate, byte_budget, t_limit, last_stage, generation, overhead,
                  count_versions, raw, at, params, t_buf, p_buf,
                  dirty_bits, dirty_words, dirty_count, zero_bits, version, mem, mem64,
                  pending_bits, block_count, chunk_cleared, clear_shift,
                  seed, zero_pattern, pattern, write_size, word_size, row, rows,
                  raw_bytes, zero_bytes, xbzrle_header, page_size, detect_zero,
                  address, age, cache_version, content, content64, xb_sizes, xb_changed,
                  xbzrle_on, cache_on, pl_flags, pl_sizes, pl_counts,
                  cpu_costs, counters, dest_mem, enc_out, received, masks):
    """Draw the writes of ``[until, t_draw)`` (nothing if ``t_draw <= until``), then send one
    chunk, adding to the pass's ``counters``. Writes already applied are dropped from the
    buffer's front first. Returns ``(status, count, w_next, c1, t_end, cursor, n_pending,
    round_done, sent, pages_sent)``; a status other than :data:`SENT` says what ran short
    (the draws pulled, the write buffer), and then nothing was drawn or
    sent (the buffer may have been compacted: ``count`` and ``w_next`` are its state)."""
    b = borrowed  # the tuples are built and unpacked without counting references
    return draw_then_send(
        t_draw, c0, until, scale, count, w_next, cursor, n_pending, round_done,
        t0, rate, byte_budget, t_limit, last_stage, generation, overhead,
        (b(raw), b(at), b(params), b(t_buf), b(p_buf)),
        (b(dirty_bits), b(dirty_words), b(dirty_count), b(zero_bits), b(version), b(mem),
         b(mem64)),
        (b(pending_bits), b(block_count), b(chunk_cleared), clear_shift),
        (b(seed), zero_pattern, count_versions, pattern, write_size, word_size, b(row),
         b(rows)),
        (raw_bytes, zero_bytes, xbzrle_header, page_size, detect_zero),
        (b(address), b(age), b(cache_version), b(content), b(content64), b(xb_sizes),
         b(xb_changed)),
        (xbzrle_on, cache_on), (b(pl_flags), b(pl_sizes), b(pl_counts)), b(cpu_costs),
        b(counters), (b(dest_mem), b(enc_out), b(received), b(masks)))
