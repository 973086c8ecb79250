"""Multifd (REF §5.2): pages leave in packets over several channels, each with its own thread.

What changes against the single stream, per page (the kernel's record sizes and CPU costs):

* **Wire.** A packet carries up to 128 pages (512 KiB): a header (~ 300 B with the 256-byte
  block name), an 8-byte offset per page, and the data of the normal pages only; zero pages are
  found in the channel threads and cost just their offset. With compression the data is the
  packet compressed as one stream by the real ``zlib``/``zstd`` at the configured level, measured
  on synthetic pages of the workload's write pattern (as XBZRLE's sizes are).
* **CPU.** The migration thread only walks the bitmap and queues pages (``per_page``); the zero
  test, the copy or the compression run in the channel threads, so their cost is divided by the
  number of channels. That is why k channels give about k× the throughput of one when the link
  is not the bottleneck, as long as the host has a core for each (``source_cpu.cores``: with
  fewer, the channels' work divides by the cores, not the channels).

* **Rate limit.** QEMU charges a packet to ``max-bandwidth`` when the migration thread hands it
  to a channel (7.2: ``multifd_send_pages`` → ``qemu_file_acct_rate_limit``) but checks the limit
  before every page, so a 100 ms window sends whole packets until the charge passes the budget:
  ``floor(B / P) + 1`` packets (:meth:`sim.engine.pipeline.Pipeline.window_budget`).

Model notes: channels share the link with the main stream by the link's fair share; the source
host is assumed to have a core per channel; XBZRLE is excluded by ``migrate-set-capabilities``
(REF §6.1). Synthetic page content is random bytes, which general-purpose compressors cannot
shrink: on this model compression costs CPU and saves nothing unless pages are zero or written
with the ``zero`` pattern. Real guest RAM often compresses 2-4×; the README says so.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..choices import MULTIFD_COMPRESSION
from ..spec import MigrationSpec, SourceCpuSpec, WorkloadSpec
from .content import PATTERNS, synthetic_pages, writer_spec

PACKET_PAGES = 128
PACKET_HEADER = 4 + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 256  # magic .. packet_num, ramblock name
OFFSET = 8


@dataclass(frozen=True, slots=True)
class Compressor:
    """One multifd-compression method: its level parameter, its channel threads' speed, and the
    real library call that measures its sizes."""

    level: Callable[[MigrationSpec], int]
    rate: Callable[[SourceCpuSpec], float]  # bytes of page input per second (0: free)
    make: Callable[[int], Callable[[bytes], bytes]]  # level -> compress(data)


def _zlib(level: int) -> Callable[[bytes], bytes]:
    return lambda data: zlib.compress(data, level)


def _zstd(level: int) -> Callable[[bytes], bytes]:
    import zstandard

    compress: Callable[[bytes], bytes] = zstandard.ZstdCompressor(level=level).compress
    return compress


#: the compressors, by multifd-compression name ("none" sends pages as they are)
COMPRESSORS: dict[str, Compressor] = {
    "zlib": Compressor(lambda spec: spec.multifd_zlib_level, lambda cpu: cpu.zlib_rate, _zlib),
    "zstd": Compressor(lambda spec: spec.multifd_zstd_level, lambda cpu: cpu.zstd_rate, _zstd),
}
assert set(COMPRESSORS) == set(MULTIFD_COMPRESSION) - {"none"}, "a method without a compressor"


@lru_cache(maxsize=32)
def compressed_page_bytes(method: str, level: int, pattern: int, write_size: int,
                          word_size: int, page_size: int) -> float:
    """Mean compressed bytes per page of a packet of synthetic pages (random content written a
    few times with the pattern), measured with the real compressor."""
    rng = np.random.default_rng([pattern, write_size, word_size, page_size, 17])
    counts = rng.integers(1, 8, size=PACKET_PAGES * 2)
    _, pages = synthetic_pages(rng, counts, pattern, write_size, word_size, page_size)
    compress = COMPRESSORS[method].make(level)
    sizes = [len(compress(pages[i:i + PACKET_PAGES].tobytes()))
             for i in range(0, pages.shape[0], PACKET_PAGES)]
    return float(np.mean(sizes)) / PACKET_PAGES


def parallel(spec: MigrationSpec, cpu: SourceCpuSpec) -> float:
    """How many channel threads run at once: one per channel, at most ``source_cpu.cores``."""
    channels = spec.multifd_channels
    return min(float(channels), cpu.cores) if cpu.cores > 0 else float(channels)


def wire_and_cpu(spec: MigrationSpec, cpu: SourceCpuSpec, workload: WorkloadSpec,
                 page_size: int) -> tuple[int, int, np.ndarray]:
    """(normal page bytes, zero page bytes, kernel CPU costs) with multifd in force."""
    header = PACKET_HEADER / PACKET_PAGES
    method = spec.multifd_compression
    if method == "none":
        data = float(page_size)
        per_byte_rate = cpu.copy_rate
    else:
        w = writer_spec(workload)
        compressor = COMPRESSORS[method]
        data = compressed_page_bytes(method, compressor.level(spec), PATTERNS[w.write_pattern],
                                     w.write_size, w.word_size, page_size)
        per_byte_rate = compressor.rate(cpu)
    channels = parallel(spec, cpu)
    scan = page_size / cpu.scan_rate if cpu.scan_rate > 0 else 0.0
    work = page_size / per_byte_rate if per_byte_rate > 0 else 0.0
    if spec.zero_page_detection == "none":
        scan = 0.0
    costs = np.array([cpu.per_page + scan / channels, work / channels, 0.0, 0.0], np.float64)
    return (int(round(data + OFFSET + header)), int(round(OFFSET + header)), costs)


__all__ = ["COMPRESSORS", "PACKET_PAGES", "Compressor", "compressed_page_bytes", "parallel",
           "wire_and_cpu"]
