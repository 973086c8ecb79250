"""Measure the memory-scan and copy speeds behind ``source_cpu:`` defaults (DESIGN §3).

QEMU's migration thread reads a page for the zero-page test and copies raw pages into the
socket buffer; both run at memory bandwidth. This times the same operations with numpy on 256 MiB
buffers (larger than any cache), one thread. The XBZRLE defaults come from QEMU's own encoder
measured on this machine class (REF §11.2), not from here. Run: ``python benchmarks/calibrate_cpu.py``.
"""

from __future__ import annotations

import time

import numpy as np

from sim.units import MiB

SIZE = 256 * MiB


def rate(fn, nbytes: int, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return nbytes / float(np.median(times))


def main() -> None:
    src = np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8)
    dst = np.empty_like(src)
    zero = np.zeros(SIZE, np.uint8)
    scan = rate(lambda: zero.any(), SIZE)
    copy = rate(lambda: np.copyto(dst, src), SIZE)
    print("source_cpu calibration (one thread, 256 MiB buffers, median of 7)")
    print(f"  scan_rate  (zero test over zero pages): {scan / 1e9:6.2f} GB/s")
    print(f"  copy_rate  (page into a buffer):        {copy / 1e9:6.2f} GB/s")
    print("  xbzrle_rate 5.6 GB/s and xbzrle_per_byte 15 ns a run-length byte: QEMU's encoder, REF §11.2")
    import zlib

    import zstandard

    packet = src[:128 * 4096].tobytes()  # one multifd packet of random pages
    zstd = zstandard.ZstdCompressor(level=1)
    for name, fn in (("zlib_rate", lambda: zlib.compress(packet, 1)),
                     ("zstd_rate", lambda: zstd.compress(packet))):
        print(f"  {name:9}  (level 1, one 512 KiB packet): {rate(fn, len(packet)) / 1e6:8.1f} MB/s")


if __name__ == "__main__":
    main()
