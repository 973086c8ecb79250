"""The per-page inner loop of one RAM section chunk, compiled with numba.

One call sends pages from the migration bitmap ``B`` in scan order, starting at the cursor, until
the window's byte budget is spent, the chunk's time limit is reached, or no page is pending (REF
§1.2–1.3). Guest writes that fall inside the chunk are applied in time order *between* page sends,
so every page goes out with exactly the content it had when it was sent, and every write lands in
the dirty log ``D`` or not by QEMU's clear-chunk rule (REF §1.3, §1.8 step 6). A Python loop per
page would be far too slow for TiB guests; this is one compiled pass.

Model notes (where this departs from QEMU):
* QEMU checks the 50 ms chunk limit every 64 pages; we check before every page.
* Page order is ascending address in one RAMBlock (a guest is one block, ``pc.ram``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..encoders.cache import try_insert
from ..encoders.xbzrle import decode_page, encode_page
from .content import apply_write

# Indices into the counters array the kernel updates in place.
C_NORMAL = 0  # pages sent raw (includes XBZRLE misses and overflows)
C_ZERO = 1  # zero-page records
C_XBZRLE = 2  # cache hits (encoded + unchanged + overflowed), QEMU's xbzrle "pages"
C_XBZRLE_BYTES = 3  # QEMU's xbzrle "bytes": 3 + n per record, 4096 per overflow
C_CACHE_MISS = 4
C_OVERFLOW = 5
C_ENCODED = 6  # XBZRLE records actually sent
C_UNCHANGED = 7  # hits with nothing to send
C_BYTES = 8  # wire bytes
C_PAGES_SENT = 9  # normal + zero + encoded (what the send loop reports)
C_DECODE_ERRORS = 10  # exact mode: records the destination's decoder rejected (a model bug)
N_COUNTERS = 11



@njit(inline="always")
def cache_insert(slot_addr, slot_age, slot_version, slot, page, version, generation):
    """QEMU's cache_insert (age rule in :mod:`sim.encoders.cache`), noting the page's version."""
    if try_insert(slot_addr, slot_age, slot, page, generation):
        slot_version[slot] = version
        return True
    return False


@njit(cache=True)
def _xbzrle_size(sizes, writes_since, page, version):
    """Encoded size for a page written ``writes_since`` times since it was cached.

    ``sizes[k, j]`` holds sizes the real encoder produced for ``k`` writes of the workload's
    pattern (-1 = overflow); ``j`` is picked by a hash of (page, version) so runs are repeatable.
    """
    k = writes_since
    if k >= sizes.shape[0]:
        k = sizes.shape[0] - 1
    h = (np.uint64(page) * np.uint64(0x9E3779B97F4A7C15)
         + np.uint64(version) * np.uint64(0xBF58476D1CE4E5B9))
    h ^= h >> np.uint64(31)
    j = np.int64(h % np.uint64(sizes.shape[1]))
    return sizes[k, j]


@njit(inline="always")
def _apply_write(k, pending, dirty_log, zero, version, w_page, zero_pattern, w_seed,
                 clear_shift, chunk_cleared, exact, mem, pattern, write_size, word_size):
    p = w_page[k]
    version[p] += 1
    zero[p] = zero_pattern
    if exact:
        apply_write(mem[p], pattern, write_size, word_size, w_seed[k])
    # The write is absorbed (KVM log cleared later) only while the page still waits in B and
    # its clear-chunk has not been re-armed this pass; otherwise it dirties D (REF §1.3).
    if not (pending[p] and not chunk_cleared[p >> clear_shift]):
        dirty_log[p] = True


@njit(inline="always")
def _send_raw(p, raw_bytes, counters, exact, mem, dest):
    """A raw page record: counted as ``normal``; in exact mode the destination gets the bytes."""
    counters[C_NORMAL] += 1
    counters[C_PAGES_SENT] += 1
    if exact:
        dest[p, :] = mem[p]
    return raw_bytes


@njit(inline="always")
def _next_pending(pending, cursor):
    """The first pending page at or after ``cursor`` in scan order, wrapping at the end of RAM
    (there must be one); also whether the scan wrapped."""
    wrapped = False
    n = pending.shape[0]
    while not pending[cursor]:
        cursor += 1
        if cursor == n:
            cursor = 0
            wrapped = True
    return cursor, wrapped


@njit(inline="always")
def _is_zero(row64):
    for i in range(row64.shape[0]):
        if row64[i] != 0:
            return False
    return True


@njit(cache=True)
def send_chunk(pending, dirty_log, zero, version,
               w_t, w_page, zero_pattern, w_next,
               cursor, n_pending, t0, rate, byte_budget, t_limit,
               clear_shift, chunk_cleared,
               raw_bytes, zero_bytes, xbzrle_header, page_size, detect_zero,
               xbzrle_on, cache_on, xbzrle_started, last_stage, generation, stop_after_encoded,
               slot_addr, slot_age, slot_version, xb_sizes,
               pl_flags, pl_sizes, pl_counts,
               cpu_costs, counters,
               exact, mem, mem64, dest, cache_data, cache64, enc_out, w_seed,
               pattern, write_size, word_size):
    """Send one chunk. Returns ``(t_end, cursor, w_next, n_pending, started, bytes, plugin_page,
    plugin_slot)``.

    ``w_*`` are the buffered guest writes in time order; ``w_next`` is the first one not yet
    applied. Writes with ``t < t_end`` are applied before returning; later ones stay buffered.

    With ``exact``, ``mem`` holds the source's real bytes (``mem64`` the same as uint64 words),
    writes change them, XBZRLE runs the real encoder against the cached copy in ``cache_data``,
    and every record is applied to the destination's memory ``dest`` (XBZRLE records through the
    real decoder). Otherwise those arrays are placeholders and sizes come from ``xb_sizes``.

    Plug-in encoders (DESIGN §9) in force are rows of ``pl_flags`` (needs_previous, record
    header bytes, destination cannot decode) in their order. They get the pages that the zero
    test and XBZRLE leave for raw; a delta plug-in (needs_previous) only cache hits that XBZRLE
    did not take. In modelled mode their sizes come from ``pl_sizes`` (like ``xb_sizes``) and
    ``pl_counts[j]`` counts (records, bytes). In exact mode a plug-in is Python code: the chunk
    stops *before* accounting such a page and returns it as ``plugin_page`` (with the cache slot
    of a hit as ``plugin_slot``, else -1); the caller encodes it and calls again.

    ``cpu_costs`` is the source thread's time (seconds): per page scanned, per raw page copied,
    per XBZRLE comparison, per XBZRLE output byte. The thread and the link overlap (the socket
    buffers), so a page's send completes at ``max(wire time, CPU time)`` accumulated over the
    chunk: a fast link leaves the pace to the CPU.

    ``stop_after_encoded``: the destination cannot parse XBZRLE records, so the chunk ends right
    after the first one is sent (the caller fails the migration there). A plug-in whose
    destination cannot decode it stops the chunk the same way.
    """
    n = pending.shape[0]
    t = t0
    sent = 0.0
    masks = np.empty((mem64.shape[1] + 7) >> 3, dtype=np.uint64)  # encoder scratch
    n_slots = slot_addr.shape[0]
    n_w = w_t.shape[0]
    n_pl = pl_flags.shape[0]
    cpu = 0.0
    cpu_page, cpu_copy, cpu_xb, cpu_xb_byte = cpu_costs[0], cpu_costs[1], cpu_costs[2], cpu_costs[3]
    plugin_page = -1
    plugin_slot = -1
    while True:
        # Guest writes that happen before this page's send starts.
        while w_next < n_w and w_t[w_next] < t:
            _apply_write(w_next, pending, dirty_log, zero, version, w_page, zero_pattern, w_seed,
                         clear_shift, chunk_cleared, exact, mem, pattern, write_size, word_size)
            w_next += 1
        if n_pending == 0 or sent >= byte_budget or t >= t_limit:
            break
        # Next pending page from the cursor, wrapping; the first wrap starts XBZRLE (REF §2.6).
        cursor, wrapped = _next_pending(pending, cursor)
        xbzrle_started = xbzrle_started or wrapped
        p = cursor
        c = p >> clear_shift
        if not chunk_cleared[c]:
            chunk_cleared[c] = True
        pending[p] = False
        n_pending -= 1
        cursor += 1
        if cursor == n:
            cursor = 0
            xbzrle_started = True
        size = 0
        cpu += cpu_page
        hit = -1  # cache slot of a hit XBZRLE did not take
        leftover = False  # not sent yet: plug-ins, else raw
        stop = False
        page_is_zero = _is_zero(mem64[p]) if exact else zero[p]
        if detect_zero and page_is_zero:
            size = zero_bytes
            counters[C_ZERO] += 1
            counters[C_PAGES_SENT] += 1
            if exact:
                dest[p, :] = 0
            if cache_on and xbzrle_started:
                # A sent zero page refreshes the cache with a zero copy (age rule applies).
                slot = p & (n_slots - 1)
                if cache_insert(slot_addr, slot_age, slot_version, slot, p, version[p],
                                generation) and exact:
                    cache_data[slot, :] = 0
        elif cache_on and xbzrle_started:
            slot = p & (n_slots - 1)
            if slot_addr[slot] != p:
                if xbzrle_on:
                    counters[C_CACHE_MISS] += 1
                if not last_stage:
                    if cache_insert(slot_addr, slot_age, slot_version, slot, p, version[p],
                                    generation) and exact:
                        cache_data[slot, :] = mem[p]
                leftover = True
            elif not xbzrle_on:
                slot_age[slot] = generation  # a hit refreshes the age
                hit = slot
                leftover = True
            else:
                slot_age[slot] = generation
                counters[C_XBZRLE] += 1
                if exact:
                    enc = encode_page(cache64[slot], mem64[p], mem[p], page_size, enc_out, masks)
                else:
                    since = np.int64(version[p]) - np.int64(slot_version[slot])
                    enc = 0 if since == 0 else _xbzrle_size(xb_sizes, since, p, version[p])
                cpu += cpu_xb + (page_size if enc < 0 else enc) * cpu_xb_byte
                if enc == 0:
                    counters[C_UNCHANGED] += 1  # nothing sent; the scan moves on
                else:
                    if not last_stage:
                        slot_version[slot] = version[p]
                        if exact:
                            cache_data[slot, :] = mem[p]
                    if enc < 0:
                        counters[C_OVERFLOW] += 1
                        counters[C_XBZRLE_BYTES] += page_size
                        leftover = True
                    else:
                        size = xbzrle_header + enc
                        counters[C_XBZRLE_BYTES] += 3 + enc
                        counters[C_ENCODED] += 1
                        counters[C_PAGES_SENT] += 1
                        if stop_after_encoded:
                            stop = True
                        elif exact:
                            if decode_page(enc_out, enc, dest[p]) < 0:
                                counters[C_DECODE_ERRORS] += 1
        else:
            leftover = True
        if leftover and n_pl > 0:
            if exact:
                plugin_page = p
                plugin_slot = hit
                break
            for j in range(n_pl):
                if pl_flags[j, 0] != 0 and hit < 0:
                    continue  # a delta encoder needs the page as last sent
                if pl_flags[j, 0] != 0:
                    since = np.int64(version[p]) - np.int64(slot_version[hit])
                    enc = 0 if since == 0 else _xbzrle_size(pl_sizes[j], since, p, version[p])
                else:
                    enc = _xbzrle_size(pl_sizes[j], np.int64(version[p]), p, version[p])
                if enc < 0:
                    continue  # "not for this encoder"
                leftover = False
                if enc == 0:
                    counters[C_UNCHANGED] += 1
                else:
                    size = pl_flags[j, 1] + enc
                    pl_counts[j, 0] += 1
                    pl_counts[j, 1] += size
                    counters[C_PAGES_SENT] += 1
                    if hit >= 0 and not last_stage:
                        slot_version[hit] = version[p]
                    stop = pl_flags[j, 2] != 0
                break
        if leftover:
            size = _send_raw(p, raw_bytes, counters, exact, mem, dest)
            cpu += cpu_copy
        sent += size
        t = t0 + max(sent / rate, cpu)
        if stop:
            break
    counters[C_BYTES] += np.int64(sent)
    return t, cursor, w_next, n_pending, xbzrle_started, sent, plugin_page, plugin_slot


@njit(cache=True)
def apply_writes(pending, dirty_log, zero, version, w_t, w_page, zero_pattern, w_seed, w_next,
                 t_end, clear_shift, chunk_cleared, exact, mem, pattern, write_size, word_size):
    """Apply buffered writes with ``t < t_end`` while nothing is being sent (idle or stopped)."""
    n_w = w_t.shape[0]
    while w_next < n_w and w_t[w_next] < t_end:
        _apply_write(w_next, pending, dirty_log, zero, version, w_page, zero_pattern, w_seed,
                     clear_shift, chunk_cleared, exact, mem, pattern, write_size, word_size)
        w_next += 1
    return w_next


@njit(cache=True)
def sync_bitmap(pending, dirty_log):
    """B := B ∪ D, D := ∅. Returns (pages pending after, pages newly dirty)."""
    n_pending = 0
    newly = 0
    for i in range(pending.shape[0]):
        if dirty_log[i]:
            dirty_log[i] = False
            if not pending[i]:
                pending[i] = True
                newly += 1
        if pending[i]:
            n_pending += 1
    return n_pending, newly


@njit(cache=True)
def postcopy_chunk(pending, zero, w_t, w_page, w_next, cursor, n_pending, t0, rate, t_limit,
                   raw_bytes, zero_bytes, fault_bytes, fault_cost, dest_written, stats):
    """Post-copy after the switch (REF §5.1): the destination runs the guest while the source
    pushes the missing pages (``pending``) in scan order. A guest write to a missing page is a
    remote fault: the page is requested over the return path and sent at once (``fault_bytes``
    on the link), and the vCPU stalls ``fault_cost`` seconds. ``stats`` accumulates (faults,
    stall seconds, background pages, wire bytes). Returns ``(t_end, cursor, w_next, n_pending)``.

    Model note: the guest's later writes are not delayed by its stalls (the write clock is
    fixed), so with many faults the fault count is an upper bound; reads are not modelled.
    """
    n_w = w_t.shape[0]
    sent = 0.0
    t = t0
    while True:
        while w_next < n_w and w_t[w_next] < t:
            p = w_page[w_next]
            dest_written[p] = True
            if pending[p]:
                pending[p] = False
                n_pending -= 1
                stats[0] += 1.0
                stats[1] += fault_cost
                sent += fault_bytes
                t = t0 + sent / rate
            w_next += 1
        if n_pending == 0 or t >= t_limit:
            break
        cursor, _ = _next_pending(pending, cursor)
        p = cursor
        pending[p] = False
        n_pending -= 1
        sent += zero_bytes if zero[p] else raw_bytes
        stats[2] += 1.0
        t = t0 + sent / rate
    stats[3] += sent
    return t, cursor, w_next, n_pending
