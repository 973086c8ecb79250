"""An incremental parser of QEMU's main migration stream, up to the device state.

Facts of the format (our own reading of QEMU's ``migration/savevm.c``, ``migration/ram.c`` and
``scripts/analyze-migration.py``; QEMU 7.2 to 10.x, one main channel, no multifd):

* file header: be32 magic ``QEVM`` (0x5145564d), be32 version 3;
* ``QEMU_VM_CONFIGURATION`` (0x07): be32 length + machine name (``pc-i440fx-7.2``), then optional
  vmstate subsections (0x05: u8 length + name, be32 version, fields): ``configuration/capabilities``
  (be32 count, then u8 length + name each) and ``configuration/uuid`` (16 bytes);
* section headers: START (0x01) and FULL (0x04) carry be32 section id, u8 length + idstr,
  be32 instance id, be32 version id; PART (0x02) and END (0x03) only the section id. Every
  section ends with a footer (0x7e + be32 section id) on machine types that send it (all current
  ``pc`` types);
* ``QEMU_VM_COMMAND`` (0x08): be16 command, be16 length, payload; ``QEMU_VM_EOF`` (0x00);
* in the ``ram`` section, records start with be64 (offset | flags): MEM_SIZE 0x04 (total bytes,
  then per RAMBlock u8 length + idstr + be64 used length, plus be64 page size when post-copy is on
  and the block's page size is not the host's, plus be64 address with ``x-ignore-shared``),
  ZERO 0x02 (one fill byte), PAGE 0x08 (4096 bytes), XBZRLE 0x40 (u8 0x01, be16 length, data),
  COMPRESS_PAGE 0x100 (be32 length, zlib data; QEMU < 9.1), EOS 0x10 (end of the section's data),
  MULTIFD_FLUSH 0x200 (no payload). Without CONTINUE (0x20) a page record names its block
  (u8 length + idstr) after the header.

Device state (FULL sections, the vmstate of every device) is not length-prefixed: parsing it would
need every device's vmstate description. From the first FULL section, or any iterable section
other than ``ram``, the parser only counts bytes until the connection ends.

The parser is fed chunks as they arrive, each with its arrival time; a record's time is the time
of the chunk that completed it. It loops once per record; page payloads are sliced, never
iterated. Damage raises :class:`StreamError` naming the byte offset; the records before it stay.

Passes: QEMU's scan walks the RAMBlocks in order and each block by increasing offset, wrapping to
the first block after the last one (``ram.c``'s round). A record whose (block, offset) is not past
the previous record's starts a new pass. This is QEMU's scan round; a dirty-bitmap sync (QMP's
``dirty-sync-count``) need not fall on a wrap.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.encoders.xbzrle import decode as xbzrle_decode
from sim.errors import XbzrleDecodeError

MAGIC = 0x5145564D
VERSION = 3
PAGE_BYTES = 4096

# top-level section types (savevm.c)
EOF, START, PART, END, FULL, SUBSECTION, CONFIGURATION, COMMAND, FOOTER = (
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07, 0x08, 0x7E)
# RAM record flags (ram.c)
F_ZERO, F_MEM_SIZE, F_PAGE, F_EOS, F_CONTINUE, F_HOOK, F_XBZRLE, F_COMPRESS, F_FLUSH = (
    0x02, 0x04, 0x08, 0x10, 0x20, 0x80, 0x40, 0x100, 0x200)
FLAG_MASK = PAGE_BYTES - 1
KNOWN_FLAGS = F_ZERO | F_MEM_SIZE | F_PAGE | F_EOS | F_CONTINUE | F_XBZRLE | F_COMPRESS | F_FLUSH
PAYLOAD_FLAGS = (F_ZERO, F_PAGE, F_XBZRLE, F_COMPRESS)
KINDS = {F_ZERO: "zero", F_PAGE: "page", F_XBZRLE: "xbzrle", F_COMPRESS: "compressed"}

ZERO_PAGE = bytes(PAGE_BYTES)
ZERO_DIGEST = int.from_bytes(hashlib.blake2b(ZERO_PAGE, digest_size=8).digest(), "big")


def digest(page: bytes) -> int:
    """blake2b-64 of a page's content (unsigned, big-endian): the ``digest`` column."""
    if page == ZERO_PAGE:
        return ZERO_DIGEST
    return int.from_bytes(hashlib.blake2b(page, digest_size=8).digest(), "big")


class StreamError(ValueError):
    """The stream is damaged or ends early. ``str(err)`` is one line naming the byte offset."""

    def __init__(self, offset: int, problem: str) -> None:
        self.offset = offset
        self.problem = problem
        super().__init__(f"byte {offset}: {problem}")


class _Short(Exception):
    """Not enough bytes buffered yet for the next item (internal: wait for the next chunk)."""


@dataclass
class Record:
    """One page record of the ``ram`` section (``content``: the page after applying it, when the
    parser keeps content)."""

    t_s: float
    pass_: int
    block: str
    page: int
    kind: str
    wire_bytes: int
    digest: int
    content: bytes | None = None


@dataclass
class Block:
    name: str
    used_bytes: int


@dataclass
class Summary:
    """What the stream showed besides the page records."""

    machine: str = ""
    capabilities: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    sections: dict[int, str] = field(default_factory=dict)  # section id -> idstr
    commands: list[tuple[float, int]] = field(default_factory=list)  # (t, command number)
    ram_end_t: float | None = None  # when the ram END section's EOS arrived
    ram_end_offset: int | None = None  # stream offset of the ram END section's header
    device_start_t: float | None = None  # when device state began (first non-ram section)
    device_bytes: int = 0
    ram_bytes: int = 0  # bytes up to the end of the last ram section
    eof: bool = False  # QEMU_VM_EOF seen (only when no device section hides it)


class _Buffer:
    """Big-endian reads at a position of a growing buffer; :class:`_Short` when it ends there
    (nothing is consumed: the item is read again, whole, when more bytes have come)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]

    def _need(self, at: int, n: int) -> None:
        if at + n > len(self._buf):
            raise _Short

    def _u8(self, at: int) -> int:
        self._need(at, 1)
        return self._buf[at]

    def _u16(self, at: int) -> int:
        self._need(at, 2)
        return int(struct.unpack_from(">H", self._buf, at)[0])

    def _u32(self, at: int) -> int:
        self._need(at, 4)
        return int(struct.unpack_from(">I", self._buf, at)[0])

    def _u64(self, at: int) -> int:
        self._need(at, 8)
        return int(struct.unpack_from(">Q", self._buf, at)[0])

    def _name(self, at: int) -> tuple[str, int]:
        n = self._u8(at)
        self._need(at + 1, n)
        return bytes(self._buf[at + 1:at + 1 + n]).decode("latin-1"), at + 1 + n

    def _fail(self, at: int, problem: str) -> StreamError:
        return StreamError(self._base + at, problem)


class StreamParser(_Buffer):
    """Feed chunks with :meth:`feed`; finish with :meth:`close`. Parsed records go to
    ``on_record`` as they complete. ``ignore_shared``: the source had ``x-ignore-shared`` (each
    RAMBlock then also carries its address); ``postcopy_page_sizes``: blocks whose page size
    QEMU writes in MEM_SIZE (post-copy on, page size not the host's)."""

    def __init__(self, on_record: Callable[[Record], None], *, keep_content: bool = True,
                 ignore_shared: bool = False,
                 postcopy_page_sizes: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.on_record = on_record
        self.keep_content = keep_content
        self.ignore_shared = ignore_shared
        self.postcopy_page_sizes = postcopy_page_sizes
        self.summary = Summary()
        self._pos = 0  # parse position in _buf
        self._state = "header"
        self._section = -1  # the ram section being read (its id), -1 outside one
        self._ram_id: int | None = None
        self._ram_end = False  # inside the ram END section
        self._last_block: Block | None = None
        self._last_position = (-1, -1)
        self._pass = 0
        self._pages: dict[tuple[str, int], bytes] = {}  # last content of every sent page
        self._t = 0.0
        self._failed: StreamError | None = None

    @property
    def offset(self) -> int:
        """Stream bytes consumed by complete items."""
        return self._base + self._pos

    @property
    def received(self) -> int:
        return self._base + len(self._buf)

    def feed(self, data: bytes, t_s: float) -> None:
        """Parse what ``data`` completes; raises :class:`StreamError` on damage."""
        if self._failed is not None:
            raise self._failed
        self._t = t_s
        if self._state == "device":
            self.summary.device_bytes += len(data)
            self._base += len(data)
            return
        self._buf += data
        try:
            while self._state != "device" and self._step():
                pass
        except StreamError as err:
            self._failed = err
            raise
        if self._state == "device":  # everything left in the buffer is device state
            rest = len(self._buf) - self._pos
            self.summary.device_bytes += rest
            self._pos += rest
        del self._buf[:self._pos]
        self._base += self._pos
        self._pos = 0

    def close(self) -> Summary:
        """The connection ended: fine in the device state or after EOF, truncation otherwise."""
        if self._failed is not None:
            raise self._failed
        if self._state not in ("device", "eof"):
            where = f"in the ram section {self._section}" if self._section >= 0 else \
                f"while expecting {self._state}"
            raise StreamError(self.received, f"stream truncated {where} "
                              f"({len(self._buf) - self._pos} bytes of an incomplete item)")
        return self.summary

    # -- one item ---------------------------------------------------------------------------------

    def _step(self) -> bool:
        """Parse one item at ``_pos``; False when more bytes are needed."""
        try:
            end = self._item(self._pos)
        except _Short:
            return False
        self._pos = end
        return True

    def _item(self, at: int) -> int:
        if self._state == "header":
            magic, version = self._u32(at), self._u32(at + 4)
            if magic != MAGIC:
                raise self._fail(at, f"not a QEMU migration stream (magic {magic:#010x}, "
                                     f"expected {MAGIC:#010x} 'QEVM')")
            if version != VERSION:
                raise self._fail(at + 4, f"stream version {version}, expected {VERSION}")
            self._state = "section"
            return at + 8
        if self._state == "footer":
            return self._footer(at)
        if self._state == "ram":
            return self._ram_record(at)
        return self._section_item(at)

    def _footer(self, at: int) -> int:
        if self._u8(at) != FOOTER:  # old machine types send no footers
            self._state, self._section = "section", -1
            return at
        sid = self._u32(at + 1)
        self._state = "section"
        if sid != self._section:
            raise self._fail(at + 1, f"footer of section {sid}, expected {self._section}")
        self._section = -1
        return at + 5

    def _section_item(self, at: int) -> int:
        kind = self._u8(at)
        if kind == CONFIGURATION:
            n = self._u32(at + 1)
            self._need(at + 5, n)
            self.summary.machine = bytes(self._buf[at + 5:at + 5 + n]).decode("latin-1")
            return self._subsections(at + 5 + n)
        if kind == COMMAND:
            command, n = self._u16(at + 1), self._u16(at + 3)
            self._need(at + 5, n)
            self.summary.commands.append((self._t, command))
            return at + 5 + n
        if kind == EOF:
            self._state = "eof"
            self.summary.eof = True
            return at + 1
        if kind in (START, FULL):
            sid = self._u32(at + 1)
            name, p = self._name(at + 5)
            self._u32(p)  # instance id
            self._u32(p + 4)  # version id
            self.summary.sections[sid] = name
            if kind == START and name == "ram":
                self._ram_id = sid
                return self._enter_ram(sid, p + 8)
            self._device(at)
            return at
        if kind in (PART, END):
            sid = self._u32(at + 1)
            if sid not in self.summary.sections:
                raise self._fail(at + 1, f"section {sid} was never started")
            if sid != self._ram_id:
                self._device(at)
                return at
            if kind == END:
                self._ram_end = True
                self.summary.ram_end_offset = self._base + at
            return self._enter_ram(sid, at + 5)
        raise self._fail(at, f"unknown section type {kind:#04x}")

    def _subsections(self, at: int) -> int:
        """The configuration's optional vmstate subsections (capabilities, uuid)."""
        while self._u8(at) == SUBSECTION:
            name, p = self._name(at + 1)
            self._u32(p)  # version
            p += 4
            if name == "configuration/capabilities":
                count = self._u32(p)
                p += 4
                caps = []
                for _ in range(count):
                    cap, p = self._name(p)
                    caps.append(cap)
                self.summary.capabilities = caps
            elif name == "configuration/uuid":
                self._need(p, 16)
                p += 16
            else:
                raise self._fail(at, f"unknown configuration subsection {name!r}")
            at = p
        return at

    def _device(self, at: int) -> None:
        """From ``at`` on the stream is device state: count it, do not parse it."""
        self._state = "device"
        self.summary.device_start_t = self._t
        self.summary.ram_bytes = self._base + at

    def _enter_ram(self, sid: int, at: int) -> int:
        self._section = sid
        self._state = "ram"
        return at

    # -- the ram section --------------------------------------------------------------------------

    def _ram_record(self, at: int) -> int:
        header = self._u64(at)
        flags, offset = header & FLAG_MASK, header & ~FLAG_MASK
        if flags & ~KNOWN_FLAGS:
            what = "RDMA hook records are not supported" if flags & F_HOOK else \
                f"unknown ram record flags {flags & ~KNOWN_FLAGS:#x}"
            raise self._fail(at, what)
        p = at + 8
        if flags & F_MEM_SIZE:
            return self._mem_size(at, offset, p)
        if flags & F_EOS:
            self._state = "footer"
            self.summary.ram_bytes = self._base + p
            if self._ram_end:
                self.summary.ram_end_t = self._t
            return p
        payload = [f for f in PAYLOAD_FLAGS if flags & f]
        if not payload:
            if flags & F_FLUSH:
                return p
            raise self._fail(at, f"ram record with flags {flags:#x} carries no page")
        if len(payload) > 1:
            raise self._fail(at, f"ram record with flags {flags:#x} has two page kinds")
        if flags & F_CONTINUE:
            if self._last_block is None:
                raise self._fail(at, "CONTINUE record before any block was named")
            block = self._last_block
        else:
            name, p = self._name(p)
            found = [b for b in self.summary.blocks if b.name == name]
            if not found:
                raise self._fail(at + 8, f"unknown RAMBlock {name!r}")
            block = found[0]
        if offset >= block.used_bytes:
            raise self._fail(at, f"offset {offset:#x} beyond RAMBlock {block.name!r} "
                                 f"({block.used_bytes:#x} bytes)")
        kind = payload[0]
        key = (block.name, offset // PAGE_BYTES)
        if kind == F_ZERO:
            fill = self._u8(p)
            end = p + 1
            content = ZERO_PAGE if fill == 0 else bytes([fill]) * PAGE_BYTES
        elif kind == F_PAGE:
            self._need(p, PAGE_BYTES)
            end = p + PAGE_BYTES
            content = bytes(self._buf[p:end])
        elif kind == F_XBZRLE:
            encoding, n = self._u8(p), self._u16(p + 1)
            if encoding != 0x01:
                raise self._fail(p, f"XBZRLE encoding flag {encoding:#04x}, expected 0x01")
            self._need(p + 3, n)
            end = p + 3 + n
            old = self._pages.get(key)
            if old is None:
                raise self._fail(at, f"XBZRLE record for page {key[1]} of {block.name!r}, "
                                     "which was never sent")
            try:
                content = xbzrle_decode(bytes(self._buf[p + 3:end]), old)
            except XbzrleDecodeError as err:
                raise self._fail(p + 3, f"bad XBZRLE record: {err}") from None
        else:
            n = self._u32(p)
            self._need(p + 4, n)
            end = p + 4 + n
            try:
                content = zlib.decompress(bytes(self._buf[p + 4:end]))
            except zlib.error as err:
                raise self._fail(p + 4, f"bad compressed page: {err}") from None
            if len(content) != PAGE_BYTES:
                raise self._fail(p + 4, f"compressed page of {len(content)} bytes")
        self._last_block = block
        position = (self.summary.blocks.index(block), offset)
        if position <= self._last_position or self._pass == 0:
            self._pass += 1
        self._last_position = position
        self._pages[key] = content
        self.on_record(Record(self._t, self._pass, block.name, key[1], KINDS[kind],
                              end - at, digest(content),
                              content if self.keep_content else None))
        return end

    def _mem_size(self, at: int, total: int, p: int) -> int:
        blocks = []
        left = total
        while left > 0:
            name, p = self._name(p)
            used = self._u64(p)
            p += 8
            if name in self.postcopy_page_sizes:
                self._u64(p)
                p += 8
            if self.ignore_shared or "x-ignore-shared" in self.summary.capabilities:
                self._u64(p)
                p += 8
            if used == 0 or used > left:
                raise self._fail(p - 8, f"RAMBlock {name!r} of {used} bytes does not fit the "
                                        f"{total} announced")
            blocks.append(Block(name, used))
            left -= used
        self.summary.blocks = blocks
        return p


__all__ = ["PAGE_BYTES", "ZERO_DIGEST", "Block", "Record", "StreamError", "StreamParser",
           "Summary", "digest"]
