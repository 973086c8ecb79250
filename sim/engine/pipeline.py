"""The page pipeline: how each page leaves the source (REF §2.6): zero test, XBZRLE against the
page cache, plug-in encoders, raw; what each record costs on the wire and in source CPU time.

:class:`Pipeline` is configured from what is in force when the migration starts (and again when
``xbzrle-cache-size`` changes). :meth:`Pipeline.send` pushes one chunk through the compiled
kernel (:mod:`sim.engine.kernel`) and, in exact mode, runs the plug-ins' Python ``encode`` and
``decode`` on the pages the kernel hands back.

Model notes: in modelled mode record sizes come from size tables measured by running the real
encoders on synthetic pages written *k* times with the workload's pattern
(:mod:`sim.engine.content`); the source thread's CPU time and the link overlap (the socket
buffers), so a chunk lasts ``max(wire time, CPU time)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import bits
from ..capabilities import InForce
from ..encoders import Encoder, call_plugin, check_payload, plugins_in_force
from ..encoders.cache import XbzrleCache
from ..guest import Guest
from ..spec import MigrationSpec, Scenario
from . import kernel, multifd
from .bitmap import MigrationBitmap
from .content import plugin_size_table, xbzrle_size_table
from .state import MigrationState, PassCounters
from .writes import WriteBuffer

_PLACEHOLDER = np.zeros((1, 8), np.uint8)  # an array the kernel's modelled mode never reads


@dataclass
class Chunk:
    """What one call of :meth:`Pipeline.send` did."""

    t_end: float
    sent: float  # wire bytes, chunk overhead included
    pages_sent: int
    broken_encoder: str | None  # whose record the destination could not parse, if any


class Pipeline:
    """Record sizes, CPU costs, the page cache and the plug-ins of one migration."""

    def __init__(self, scenario: Scenario, guest: Guest, bitmap: MigrationBitmap,
                 writes: WriteBuffer, dest: np.ndarray, state: MigrationState) -> None:
        self.scenario = scenario
        self.wire = scenario.wire
        self.page_size = scenario.vm.page_size
        self.guest = guest
        self.bitmap = bitmap
        self.writes = writes
        self.dest = dest  # the destination's RAM (exact mode; else the source's, never read)
        self.state = state
        self.enc_out = np.zeros(self.page_size if guest.exact else 8, np.uint8)
        # the encoder's scratch, one bit a word of a page (exact mode), allocated once: a chunk
        # allocating its own cost ~10% of a fleet's compiled turns
        self.masks = np.zeros(((self.page_size // 8 if guest.exact else 1) + 7) >> 3, np.uint64)
        # Pages the destination has received (its RAM touched): kept only when a first touch
        # costs something (destination_cpu.first_touch), 1 bit a page.
        first = scenario.destination_cpu.first_touch > 0
        self.received = bits.empty(guest.pages if first else 1)

    def configure(self, spec: MigrationSpec, in_force: InForce) -> None:
        """(Re)build the stream, the source's page cache (REF §2.5) and the plug-ins in force.

        The cache exists whenever XBZRLE or a delta plug-in is in force; resizing it
        (``xbzrle-cache-size`` during a migration) empties it.
        """
        self._configure_stream(spec, in_force)
        self.in_force = in_force
        self.xbzrle_on = in_force.is_enabled("xbzrle")
        self.detect_zero = spec.zero_page_detection != "none"
        self.plugins: list[Encoder] = [cls() for cls in plugins_in_force(in_force.capabilities)]
        self.cache_on = self.xbzrle_on or any(e.needs_previous for e in self.plugins)
        #: the page cache and the size samples read the guest's versions (so do plug-ins)
        self.reads_versions = self.cache_on or bool(self.plugins)
        exact = self.guest.exact
        self.cache = XbzrleCache(spec.xbzrle_cache_size if self.cache_on else self.page_size,
                                 self.page_size, store_content=exact and self.cache_on,
                                 guest_pages=self.guest.pages)
        self.xb_sizes = self.xb_changed = np.full((1, 1), -1, np.int32)
        if self.xbzrle_on and not exact:
            self.xb_sizes, self.xb_changed = xbzrle_size_table(self.scenario.workload,
                                                               self.page_size)
        # Plug-ins (DESIGN §9): (needs_previous, record header, destination cannot decode).
        n = len(self.plugins)
        self.plugin_flags = np.array(
            [[int(e.needs_previous), int(e.header),
              int(e.capability not in in_force.dest_decodes)] for e in self.plugins],
            np.int64).reshape(n, 3)
        if exact or n == 0:
            self.plugin_sizes = np.full((n, 1, 1), -1, np.int32)
        else:
            self.plugin_sizes = np.stack([plugin_size_table(type(e), self.scenario.workload,
                                                            self.page_size) for e in self.plugins])
        if len(self.state.plugin_counts) != n:
            self.state.plugin_counts = np.zeros((n, 2), np.int64)
        # The kernel's argument groups that stay the same from chunk to chunk.
        cache = self.cache
        content = cache.content if cache.content is not None else _PLACEHOLDER
        self._cache_args = (cache.address, cache.age, cache.version, content,
                            content.view(np.uint64), self.xb_sizes, self.xb_changed)
        self._wire_args = (self.raw_bytes, self.zero_bytes, self.wire.xbzrle_header,
                           self.page_size, self.detect_zero)
        self._bitmap_args = self.bitmap.kernel_args()
        self._dest_args = (self.dest, self.enc_out, self.received, self.masks)
        self._undecodable = self.xbzrle_undecodable
        # One compiled call a chunk when the writes are drawn in compiled code (:meth:`send`).
        self._drawn = (self.writes.draws is not None and not self.plugins and not exact
                       and not self._undecodable)
        self._flat_key: object = None  # the write buffer the flat arguments hold

    def _configure_stream(self, spec: MigrationSpec, in_force: InForce) -> None:
        """Record sizes and the source thread's costs: one stream, or multifd's packets over
        channels (:mod:`sim.engine.multifd`). Costs are the source's seconds per page scanned,
        raw page copied, XBZRLE comparison and XBZRLE output byte (the zero test is in the scan
        when it runs), then the destination's per raw, zero and XBZRLE record loaded, and
        whether the two ends share one core (1.0)."""
        cpu, page = self.scenario.source_cpu, self.page_size
        if in_force.is_enabled("multifd"):
            self.raw_bytes, self.zero_bytes, source = multifd.wire_and_cpu(
                spec, cpu, self.scenario.workload, page)
            channels = multifd.parallel(spec, cpu)  # as many receive threads on the destination
        else:
            self.raw_bytes, self.zero_bytes = self.wire.page_header + page, self.wire.zero_page
            scan = page / cpu.scan_rate if cpu.scan_rate > 0 else 0.0
            source = np.array([
                cpu.per_page + (scan if spec.zero_page_detection != "none" else 0.0),
                page / cpu.copy_rate if cpu.copy_rate > 0 else 0.0,
                page / cpu.xbzrle_rate if cpu.xbzrle_rate > 0 else 0.0,
                cpu.xbzrle_per_byte], np.float64)
            channels = 1.0
        dest = self.scenario.destination_cpu
        self.cpu_costs = np.concatenate([source, np.array([
            (dest.per_page + (page / dest.copy_rate if dest.copy_rate > 0 else 0.0)) / channels,
            (dest.per_page + dest.zero_page) / channels,
            (dest.per_page + dest.xbzrle_page) / channels,
            1.0 if dest.shares_source_cpu else 0.0,
            dest.first_touch / channels], np.float64)])

    def window_budget(self, max_bandwidth: float, window_s: float) -> float:
        """The bytes a rate-limit window of ``window_s`` lets through at ``max_bandwidth``
        bytes/s (``inf``: unlimited).

        One stream is checked before every page, so a 100 ms window overshoots its budget by
        less than a page. Multifd's packets are charged to the rate limit when a full packet is
        handed to a channel (QEMU 7.2 ``multifd_send_pages`` calls ``qemu_file_acct_rate_limit``
        with the packet's bytes), while the check still runs before every page: a window sends
        whole packets until the charge passes its budget, i.e. ``floor(B / P) + 1`` packets of
        ``P`` bytes. With 64 MiB/s that is 13 packets, 6.83 MB a window where the budget is
        6.71 MB (QEMU 7.2 measured here: 6.84 MB a window).
        """
        if max_bandwidth <= 0:
            return math.inf
        budget = max_bandwidth * window_s
        if not self.in_force.is_enabled("multifd"):
            return budget
        packet = multifd.PACKET_PAGES * self.raw_bytes
        return float((math.floor(budget / packet) + 1) * packet)

    @property
    def xbzrle_undecodable(self) -> bool:
        return self.xbzrle_on and "xbzrle" not in self.in_force.dest_decodes

    def send(self, now: float, t_limit: float, byte_budget: float, last_stage: bool,
             rate: float, into: PassCounters) -> Chunk:
        """One chunk through the kernel, from ``now`` until ``t_limit``, the byte budget or the
        bitmap's end.

        If the destination cannot parse a record (XBZRLE or a plug-in's), the chunk ends right
        after the first one (the stream breaks there) and ``broken_encoder`` names the encoder.
        In exact mode a page for a plug-in comes back from the kernel; it is encoded here and
        the chunk goes on from after it. The chunk's counts are added to ``into`` (the pass's).
        """
        if self._drawn:
            return self._send_drawn(now, t_limit, byte_budget, last_stage, rate, into)
        bitmap, writes = self.bitmap, self.writes
        writes.generate_until(t_limit if math.isfinite(t_limit) else now)
        counters = PassCounters()
        plugins = (self.plugin_flags, self.plugin_sizes, self.state.plugin_counts)
        counts_before = plugins[2][:, 0].copy() if self.plugins else None
        mode = (self.xbzrle_on, self.cache_on, last_stage, self.state.sync_count,
                self._undecodable, self.guest.exact)
        t0, sent = now, 0.0
        while True:
            t_end, bitmap.cursor, writes.next, bitmap.n_pending, bitmap.round_done, part, page, \
                slot = kernel.send_chunk(
                    self.guest.kernel_args(), self._bitmap_args, writes.kernel_args(),
                    (writes.next, bitmap.cursor, bitmap.n_pending, bitmap.round_done),
                    (t0, rate, byte_budget - sent, t_limit), self._wire_args, self._cache_args,
                    mode, plugins, self.cpu_costs, counters.array, self._dest_args)
            sent += part
            if page < 0:
                break
            size, stop = self._plugin_page(page, slot, last_stage, counters)
            sent += size
            counters.add(wire_bytes=size)
            t0 = now + sent / rate
            t_end = t0
            if stop:
                break
        broken = None
        if self._undecodable and counters["xbzrle_records"] > 0:
            broken = "xbzrle"
        if counts_before is not None:
            for j in np.flatnonzero(self.state.plugin_counts[:, 0] > counts_before):
                if self.plugin_flags[j, 2]:
                    broken = self.plugins[j].name
        if sent > 0 or counters["unchanged_pages"] > 0:
            overhead = self.wire.chunk_overhead
            sent += overhead
            counters.add(wire_bytes=overhead)
            t_end += overhead / rate
        into += counters
        return Chunk(t_end, sent, counters["pages_sent"], broken)

    def _send_drawn(self, now: float, t_limit: float, byte_budget: float, last_stage: bool,
                    rate: float, counters: PassCounters) -> Chunk:
        """:meth:`send` in one compiled call (:func:`sim.engine.kernel.draw_and_send`): the writes drawn in
        compiled code, no plug-ins, modelled content. Adds to the pass's ``counters``."""
        bitmap, writes = self.bitmap, self.writes
        draws = writes.draws
        assert draws is not None
        t_draw = t_limit if math.isfinite(t_limit) else now
        attempt = 0
        while True:
            flat = self.drawn_args()
            status, count, w_next, c1, t_end, cursor, n_pending, round_done, sent, pages = \
                kernel.draw_and_send(  # type: ignore[call-arg]
                    t_draw, writes.workload.clock_count, writes.until, writes.scale(),
                    writes.count, writes.next, bitmap.cursor, bitmap.n_pending,
                    bitmap.round_done, now, rate, byte_budget, t_limit, last_stage,
                    self.state.sync_count, self.wire.chunk_overhead,
                    self.guest.counts_versions, draws.raw, *flat,
                    counters.array, *self._dest_args)
            writes.set_count(count, w_next)
            if status == kernel.SENT:
                if t_draw > writes.until:
                    writes.workload.advance_clock(t_draw, c1)
                    writes.until = t_draw
            if status == kernel.SENT:
                break
            if status == kernel.DRAWS_SHORT:
                writes.pull_draws(t_draw, attempt)
                attempt += 1
            else:  # WRITES_FULL
                writes.room_for(t_draw)
        bitmap.cursor, bitmap.n_pending, bitmap.round_done = cursor, n_pending, round_done
        return Chunk(t_end, sent, pages, None)

    @property
    def drawn(self) -> bool:
        """Whether a chunk is one compiled call (:meth:`_send_drawn`; the cruise needs it)."""
        return self._drawn

    @property
    def dest_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The compiled chunk's last arguments: the destination's RAM, encoder output and
        pages received."""
        return self._dest_args

    def drawn_args(self) -> tuple[object, ...]:
        """The fused call's arguments that change only with the buffers, rebuilt when the
        write buffer has been reallocated."""
        if self._flat_key is not self.writes.t_buf:
            self._flat = self._flat_args()
        return self._flat

    def _flat_args(self) -> tuple[object, ...]:
        """The fused call's arguments that change only with the buffers (see :meth:`send`)."""
        writes, guest = self.writes, self.guest
        assert writes.draws is not None
        self._flat_key = writes.t_buf
        return (writes.draws.at, writes.draw_params, writes.t_buf, writes.p_buf,
                *guest.kernel_args(), *self._bitmap_args, writes.seed, writes.zero_pattern,
                writes.pattern, writes.write_size, writes.word_size, writes.row,
                writes.workload.content_versions, *self._wire_args, *self._cache_args,
                self.xbzrle_on, self.cache_on, self.plugin_flags, self.plugin_sizes,
                self.state.plugin_counts, self.cpu_costs)

    def _plugin_page(self, p: int, slot: int, last_stage: bool,
                     counters: PassCounters) -> tuple[int, bool]:
        """Exact mode: page ``p`` through the plug-ins in order (a delta one only with a cache
        hit, ``slot``), else raw; the destination decodes with the plug-in's ``decode``.
        Returns (wire bytes, whether the stream broke here)."""
        page = self.guest.memory[p]
        content = self.cache.content
        for j, enc in enumerate(self.plugins):
            previous = None
            if enc.needs_previous:
                if slot < 0 or content is None:
                    continue
                previous = content[slot].tobytes()
            payload = check_payload(enc, call_plugin(enc, "encode", page.tobytes(), previous))
            if payload is None:
                continue
            if len(payload) == 0:
                counters.add(unchanged_pages=1)
                return 0, False
            size = int(self.plugin_flags[j, 1]) + len(payload)
            self.state.plugin_counts[j] += (1, size)
            counters.add(pages_sent=1)
            if slot >= 0 and not last_stage and content is not None:
                content[slot] = page
                self.cache.version[slot] = self.guest.version[p]
            if self.plugin_flags[j, 2]:
                return size, True
            try:
                rebuilt = enc.decode(payload, self.dest[p].tobytes() if enc.needs_previous
                                     else None)
            except (Exception, SystemExit):  # noqa: BLE001 - a plug-in's bug: a decode error
                rebuilt = b""
            if isinstance(rebuilt, bytes | bytearray | memoryview) \
                    and len(rebuilt) == self.page_size:
                self.dest[p] = np.frombuffer(rebuilt, np.uint8)
            else:  # it raised, or decoded something that is not a page
                counters.add(decode_errors=1)
            return size, False
        counters.add(normal_pages=1, pages_sent=1)
        self.dest[p] = page
        return int(self.raw_bytes), False
