"""numpy's ``Generator`` draws that the workloads use, reproduced in compiled code.

A fleet sends hundreds of thousands of 50 ms chunks, each drawing a dozen writes; a call of
``Generator.integers`` costs microseconds of Python, more than the chunk's own work. The draws
here give, value for value, what ``Generator.integers(0, n, size=k)`` (int64) and
``Generator.random(k)`` give on a PCG64 generator, and leave it in the same state, so moving write
generation into compiled code changes no table.

How numpy draws (numpy/random/src/distributions/distributions.c): ``random`` is ``(next_uint64 >>
11) / 2**53``; ``integers`` below ``2**32 - 1`` is Lemire's nearly divisionless rejection on
``next_uint32``, and a PCG64 bit generator hands out the two 32-bit halves of one 64-bit output in
turn (low first; the high half waits in ``has_uint32``/``uinteger``, part of its state). A range
of one value draws nothing.

:class:`RawDraws` pulls a generator's 64-bit outputs ahead into a buffer (``random_raw``), and
the compiled draws consume it; :meth:`RawDraws.settle` hands back what was not used (PCG64's
``advance`` with a negative count) and the pending 32-bit half, so Python's draws go on exactly
where the compiled ones stopped. ``tests/test_draws.py`` checks the equality on many ranges and
sizes, rejection-heavy ones included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

#: indices into a :class:`RawDraws` ``at`` array: next unused output, a 32-bit half waiting, it,
#: and whether a draw ran past the outputs pulled (the draws then stop and are taken back)
AT_POS, AT_HAS32, AT_HALF, AT_SHORT = 0, 1, 2, 3
#: the widest range (``n - 1``) the compiled ``integers`` reproduces: numpy's 32-bit path
MAX_RANGE = 0xFFFFFFFE

#: the most outputs pulled ahead beyond what a call asks for (8 bytes each)
PULL_BLOCK = 1 << 16

_MASK32 = np.uint64(0xFFFFFFFF)


@njit(inline="always")
def _next64(raw, at):
    if at[AT_POS] >= raw.shape[0]:
        at[AT_SHORT] = 1
        return np.uint64(0)
    v = raw[at[AT_POS]]
    at[AT_POS] += 1
    return v


@njit(inline="always")
def _next32(raw, at):
    if at[AT_HAS32] != 0:
        at[AT_HAS32] = 0
        return np.uint64(at[AT_HALF])
    v = _next64(raw, at)
    at[AT_HAS32] = 1
    at[AT_HALF] = np.int64(v >> np.uint64(32))
    return v & _MASK32


@njit(inline="always")
def bounded(raw, at, rng):
    """One ``integers(0, rng + 1)`` value (0 <= rng <= MAX_RANGE), Lemire's rejection."""
    if rng == 0:
        return np.int64(0)
    excl = np.uint64(rng) + np.uint64(1)
    m = _next32(raw, at) * excl
    leftover = m & _MASK32
    if leftover < excl:
        threshold = (_MASK32 - np.uint64(rng)) % excl
        while leftover < threshold and at[AT_SHORT] == 0:
            m = _next32(raw, at) * excl
            leftover = m & _MASK32
    return np.int64(m >> np.uint64(32))


@njit(inline="always")
def uniform01(raw, at):
    """One ``random()`` value."""
    return np.float64(_next64(raw, at) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def integers(raw, at, n, size):
    """``integers(0, n, size=size)`` as int64 (tests and callers outside compiled code)."""
    out = np.empty(size, np.int64)
    for i in range(size):
        out[i] = bounded(raw, at, n - 1)
    return out


@njit(cache=True)
def random(raw, at, size):
    """``random(size)`` (tests)."""
    out = np.empty(size, np.float64)
    for i in range(size):
        out[i] = uniform01(raw, at)
    return out


class RawDraws:
    """A PCG64 generator's outputs pulled ahead for compiled draws (see the module docstring).

    While outputs are pulled (:attr:`raw` holds them, ``at[AT_POS]`` the next unused one) the
    Python generator must not be drawn from: call :meth:`settle` first.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.raw = np.empty(0, np.uint64)
        self.at = np.zeros(4, np.int64)
        self.pulled = False

    @staticmethod
    def supports(rng: np.random.Generator) -> bool:
        return type(rng.bit_generator).__name__ == "PCG64"

    def left(self) -> int:
        """Outputs pulled and not used yet."""
        return int(self.raw.shape[0] - self.at[AT_POS]) if self.pulled else 0

    def pull(self, n: int) -> None:
        """Have at least ``n`` outputs ahead: if fewer are left, settle and pull a fresh block
        of a few times ``n`` (so a block lasts several chunks; at most 512 KiB beyond ``n``)."""
        if self.left() >= n:
            return
        self.settle()
        bg = self.rng.bit_generator
        state = bg.state
        self.at[AT_HAS32] = int(state["has_uint32"])
        self.at[AT_HALF] = int(state["uinteger"])
        self.raw = bg.random_raw(max(n, min(PULL_BLOCK, 4 * n)))
        self.at[AT_POS] = self.at[AT_SHORT] = 0
        self.pulled = True

    def settle(self) -> None:
        """Hand back the unused outputs and the waiting 32-bit half: the generator is then where
        numpy's own draws would have left it."""
        if not self.pulled:
            return
        bg: Any = self.rng.bit_generator  # PCG64 (see supports): it has advance()
        unused = self.left()
        if unused:
            bg.advance(-unused)
        state = dict(bg.state)
        state["has_uint32"] = int(self.at[AT_HAS32])
        state["uinteger"] = int(self.at[AT_HALF])
        bg.state = state
        self.pulled = False


# --- the steady write clock's writes, drawn in compiled code --------------------------------------

#: ``params`` of :func:`steady_writes`: the workload's kind (one of the codes below), first page
#: of its region, the region's pages, the hot set's pages, the hot probability, writes a second
KIND_UNIFORM, KIND_HOTSPOT = 1, 2


@njit(cache=True)
def steady_writes(raw, at, params, t0, c0, t1, scale, t_buf, p_buf, count):
    """The writes of ``[t0, t1)`` appended to ``t_buf``/``p_buf`` from ``count`` on, as
    :meth:`sim.workloads.Workload.writes` of a uniform or hotspot workload draws them (the same
    clock arithmetic, the same draws in the same order). Returns ``(count, c1)``: the new count
    and the cumulative write count at ``t1``; ``count`` is -1 when the buffer has no room and
    -2 when the outputs pulled ran short (nothing was drawn either way). At most
    ``rate · (t1 - t0) + 2`` writes are added."""
    rate = params[5] * scale
    c1 = c0 + rate * (t1 - t0)
    k0 = np.int64(np.ceil(c0))
    k1 = np.int64(np.ceil(c1))
    if k1 <= k0 or rate <= 0.0:
        return count, c1
    n = k1 - k0
    if count + n > t_buf.shape[0]:
        return np.int64(-1), c1
    # Nothing is allocated here (a chunk draws a dozen writes; an allocation cost more): the
    # cursor is saved in scalars, and the hotspot's draws wait in the slots they will fill.
    pos, has32, half, short = at[AT_POS], at[AT_HAS32], at[AT_HALF], at[AT_SHORT]
    first, region = np.int64(params[1]), np.int64(params[2])
    if params[0] == KIND_UNIFORM:
        for i in range(n):
            p_buf[count + i] = first + bounded(raw, at, region - 1)
    else:
        hot_pages, p_hot = np.int64(params[3]), params[4]
        for i in range(n):  # hot or not, in t_buf's slots (1.0: hot)
            t_buf[count + i] = 1.0 if uniform01(raw, at) < p_hot else 0.0
        for i in range(n):  # the page in the hot set, in p_buf's slots
            p_buf[count + i] = bounded(raw, at, hot_pages - 1)
        for i in range(n):
            anywhere = bounded(raw, at, region - 1)
            p_buf[count + i] = first + (p_buf[count + i] if t_buf[count + i] != 0.0
                                        else anywhere)
    if at[AT_SHORT] != 0:
        at[AT_POS], at[AT_HAS32], at[AT_HALF], at[AT_SHORT] = pos, has32, half, short
        return np.int64(-2), c1
    for i in range(n):
        t_buf[count + i] = t0 + (np.float64(k0 + i) - c0) / rate
    return count + n, c1
