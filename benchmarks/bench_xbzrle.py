"""XBZRLE encoder speed against QEMU's C figures (REF §11.2, generic encoder, gcc -O2).

Five cases as REF §11.1: old pages are random bytes; changed bytes are XOR-ed with a random
non-zero value; distinct page pairs, far more than the CPU caches hold, so both streams come from
DRAM. MB/s = 1e6 bytes of new-page input per second, median of several runs, one thread.
Run: ``python benchmarks/bench_xbzrle.py [--pages N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from sim.encoders import xbzrle

PAGE = 4096

#: QEMU's generic encoder, gcc -O2, MB/s (REF §11.2).
C_MBPS = {
    "(a) 1 changed byte": 5626.0,
    "(b) 64 random changed bytes": 1448.0,
    "(c) 5% clustered (8 runs)": 4283.0,
    "(d) 50% random bytes": 105.0,
    "(e) identical": 6230.0,
}


def _xor_at(rng: np.random.Generator, new: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    new[rows, cols] ^= rng.integers(1, 256, size=rows.shape, dtype=np.uint8)


def make_case(name: str, old: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The new pages for one case, as modified copies of ``old``."""
    n = old.shape[0]
    new = old.copy()
    if name.startswith("(a)"):
        _xor_at(rng, new, np.arange(n), rng.integers(0, PAGE, size=n))
    elif name.startswith("(b)"):
        cols = np.sort(rng.integers(0, PAGE, size=(n, 64)), axis=1)
        while True:  # 64 distinct offsets per page: redraw the rows with a repeat
            bad = (np.diff(cols, axis=1) == 0).any(axis=1)
            if not bad.any():
                break
            cols[bad] = np.sort(rng.integers(0, PAGE, size=(int(bad.sum()), 64)), axis=1)
        _xor_at(rng, new, np.repeat(np.arange(n), 64), cols.ravel())
    elif name.startswith("(c)"):
        # 8 runs, 5 x 26 + 3 x 25 = 205 bytes, non-overlapping and not touching, random places.
        lens = np.array([26] * 5 + [25] * 3)
        order = lens[np.argsort(rng.random((n, 8)), axis=1)]  # run lengths in page order
        slack = PAGE - int(lens.sum()) - 7  # at least one unchanged byte between runs
        gaps = np.sort(rng.integers(0, slack + 1, size=(n, 8)), axis=1)
        before = np.cumsum(order, axis=1) - order  # changed bytes before each run
        starts = gaps + before + np.arange(8)
        offs = np.arange(26)
        cols = starts[:, :, None] + offs
        keep = offs < order[:, :, None]
        rows = np.broadcast_to(np.arange(n)[:, None, None], cols.shape)
        _xor_at(rng, new, rows[keep], cols[keep])
    elif name.startswith("(d)"):
        mask = rng.random((n, PAGE), dtype=np.float32) < 0.5
        r, c = np.nonzero(mask)
        _xor_at(rng, new, r, c)
    return new


def _time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pages", type=int, default=100_000,
                    help="page pairs per case (case (d) uses a tenth)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(20260108)

    t_start = time.perf_counter()
    old_all = rng.integers(0, 256, size=(args.pages, PAGE), dtype=np.uint8)
    warm = old_all[:4].copy()
    xbzrle.encode_batch(warm, warm)  # load / compile the kernels before timing
    xbzrle.encoded_sizes(warm, warm)

    print(f"XBZRLE encoder, {PAGE}-byte pages, median of {args.repeats}, one thread; "
          f"MB/s = 1e6 new-page bytes/s; C = QEMU -O2 (REF §11.2)")
    print("enc = encode_batch into a reused buffer; enc+alloc = encode_batch allocating its output; "
          "size = encoded_sizes")
    head = (f"{'case':28} {'pages':>7} {'avg len':>7} {'ovfl':>6} {'enc MB/s':>8} {'x C':>5} "
            f"{'enc+alloc':>8} {'x C':>5} {'size MB/s':>8} {'x C':>5} {'C MB/s':>7}")
    print(head)
    print("-" * len(head))
    for name, c_mbps in C_MBPS.items():
        n = max(1, args.pages // 10) if name.startswith("(d)") else args.pages
        old = old_all[:n]
        new = make_case(name, old, rng)
        out = np.ones_like(new)  # reused output buffer, already faulted in (as QEMU's)
        lengths, _ = xbzrle.encode_batch(old, new, out=out)
        assert (xbzrle.encoded_sizes(old, new) == lengths).all()
        t_enc = _time(lambda old=old, new=new, out=out: xbzrle.encode_batch(old, new, out=out),
                      args.repeats)
        t_fresh = _time(lambda old=old, new=new: xbzrle.encode_batch(old, new), args.repeats)
        t_size = _time(lambda old=old, new=new: xbzrle.encoded_sizes(old, new), args.repeats)
        mb = n * PAGE / 1e6
        enc, fresh, size = mb / t_enc, mb / t_fresh, mb / t_size
        ok = lengths[lengths >= 0]
        avg = float(ok.mean()) if ok.size else float("nan")
        ovfl = float((lengths < 0).mean())
        print(f"{name:28} {n:7d} {avg:7.1f} {ovfl:6.1%} {enc:8.0f} {enc / c_mbps:5.2f} "
              f"{fresh:8.0f} {fresh / c_mbps:5.2f} {size:8.0f} {size / c_mbps:5.2f} {c_mbps:7.0f}")
        del new, out
    print(f"total {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
