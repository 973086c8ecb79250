"""QEMU's JSON input, as a pure incremental parser: bytes in, parsed values or errors out.

The wire format is QEMU's (REF §7.1, QEMU ``qobject/json-lexer.c``, ``json-streamer.c``,
``json-parser.c``): a stream of JSON values with no framing; newlines are optional; strings may be
single-quoted (``'...'``, which may hold unescaped ``"``) and ``\\'`` is an escape in both kinds.
A value is complete when its brackets balance; a scalar at top level is complete at once (a
number or keyword once the byte after it, e.g. a newline, has arrived). Numbers
follow QEMU: an integer that fits int64 (else uint64) is an ``int``, anything else a ``float``.

Errors read as QEMU's (each becomes one GenericError reply):

* lexical: ``JSON parse error, stray '<text>'`` (an impossible character; the text is the token so
  far, the bad byte included, invalid UTF-8 shown as U+FFFD);
* syntax: ``JSON parse error, expecting value`` / ``key is not a string in object`` /
  ``missing : in object pair`` / ``expected separator in dict`` / ``expected separator in list`` /
  ``duplicate key`` / ``invalid keyword 'foo'`` / ``invalid escape sequence in string`` /
  ``\\uXXXX is not a valid Unicode character`` / ``invalid UTF-8 sequence in string`` /
  ``premature EOI``;
* limits: ``JSON token size limit exceeded``, ``JSON token count limit exceeded``,
  ``JSON nesting depth limit exceeded``.

Recovery (a choice of ours; QEMU's own can answer one broken message with several errors):
after an error the parser *discards* input, silently, until either

* the end of the broken message: the brackets that were open when the error happened have been
  closed again (then parsing resumes with the next token), or
* for an error between messages (a stray character, a lone ``}``), the next ``{``, which starts
  the next message, or
* a newline, whichever comes first.

So a broken message gets one error reply, and a line-per-message client (libvirt, qemu.qmp)
always resynchronises at the next line. Like QEMU's, the lexer after a lexical error skips to
the next structural character (``{}[]:,``) or control character; a client can force a reset by
sending a byte 0xFF (never valid UTF-8) followed by a newline, as QEMU documents.

Limits (QEMU's in brackets) bound memory whatever the input: one message at most
``max_message_bytes`` of token text [64 MiB], ``max_tokens`` tokens [2 Mi] and ``max_depth``
nested brackets [1024]; a single unfinished token is held only up to ``max_message_bytes``.
The parser itself is iterative, so no input can exhaust the Python stack, and the lexer is
resumable: an unfinished token keeps its scanning state, so each byte is examined once however
the input is split into reads (a token trickled byte by byte costs linear time, not quadratic).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["JsonError", "JsonStream", "Limits", "parse_document"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on one message (see the module docstring)."""

    max_message_bytes: int = 1 << 20
    max_tokens: int = 1 << 17
    max_depth: int = 256
    #: how much of an offending token an error message repeats
    max_echo_chars: int = 256


@dataclass(frozen=True, slots=True)
class JsonError:
    """A malformed message: ``desc`` is the GenericError text."""

    desc: str


# token types
LCURLY, RCURLY, LSQUARE, RSQUARE, COMMA, COLON, STRING, INTEGER, FLOAT, KEYWORD = range(10)
_STRUCTURAL = {ord("{"): LCURLY, ord("}"): RCURLY, ord("["): LSQUARE, ord("]"): RSQUARE,
               ord(","): COMMA, ord(":"): COLON}
_OPEN = (LCURLY, LSQUARE)
_CLOSE = (RCURLY, RSQUARE)

_WS = re.compile(rb"[ \t\r\n]+")
# string bodies: any byte 0x20..0xFD but the quote and backslash, or backslash + 0x20..0xFD
_DQ_RUN = re.compile(rb'(?:[^"\\\x00-\x1f\xfe\xff]|\\[\x20-\xfd])*')
_SQ_RUN = re.compile(rb"(?:[^'\\\x00-\x1f\xfe\xff]|\\[\x20-\xfd])*")
_DIGITS = re.compile(rb"[0-9]*")
_KEYWORD = re.compile(rb"[a-z]*")
# fast paths for a token wholly inside one read (the resumable scanner handles the rest)
_DQ_TOKEN = re.compile(rb'"(?:[^"\\\x00-\x1f\xfe\xff]|\\[\x20-\xfd])*"')
_SQ_TOKEN = re.compile(rb"'(?:[^'\\\x00-\x1f\xfe\xff]|\\[\x20-\xfd])*'")
_NUMBER_TOKEN = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+(?:[eE][-+]?[0-9]+)?)"
                           rb"|-?(?:0|[1-9][0-9]*([eE][-+]?[0-9]+)?)")
_NUMBER_NEXT = frozenset(b"0123456789.eE+-")
# error recovery skips everything but control characters (tab excepted), 0xFE, 0xFF and {}[]:,
_SKIP = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]*")
_NEWLINE = 0x0A

# the unfinished token's kind, a number's scanning state, the outcome of a scan
_NONE, _DQ, _SQ, _NUM, _KW = range(5)
_N_SIGN, _N_ZERO, _N_INT, _N_DOT, _N_FRAC, _N_E, _N_ESIGN, _N_EXP = range(8)
_PARTIAL, _DONE, _ERROR = range(3)

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


class _SyntaxError(Exception):
    pass


def _echo(text: bytes | str, limit: int) -> str:
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return s if len(s) <= limit else s[:limit] + "..."


class JsonStream:
    """Feed bytes, get back complete values (any JSON type) and :class:`JsonError` items.

    The lexer is resumable: an unfinished token is kept with its scanning state, so every input
    byte is examined once however the input is split into reads.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        # the unfinished token: its bytes so far, its kind and where its scan stands
        self._pending = bytearray()
        self._kind = _NONE
        self._state = 0
        self._float = False
        self._recovering = False  # lexer: skipping after a lexical error
        self._tokens: list[tuple[int, bytes]] = []
        self._size = 0
        self._braces = 0
        self._brackets = 0
        #: None: parsing; else discarding, with the bracket depth still to close (0: until "{")
        self._discard: int | None = None
        self._out: list[Any] = []

    @property
    def discarding(self) -> bool:
        return self._discard is not None

    # -- lexer ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Any]:
        """Consume ``data``; return the values and errors completed by it, in order."""
        buf = bytes(data)
        self._out = []
        pos, n = 0, len(buf)
        if self._kind != _NONE and n:
            pos = self._scan(buf, 0)
        while pos < n:
            if self._recovering:
                pos = _SKIP.match(buf, pos).end()  # type: ignore[union-attr]
                if pos >= n:
                    break
                self._recovering = False
                continue
            c = buf[pos]
            if c in (0x20, 0x09, 0x0D, 0x0A):
                end = _WS.match(buf, pos).end()  # type: ignore[union-attr]
                if _NEWLINE in buf[pos:end]:
                    self._newline()
                pos = end
            elif c in _STRUCTURAL:
                self._token(_STRUCTURAL[c], buf[pos:pos + 1])
                pos += 1
            elif c == 0x22 or c == 0x27:  # " or '
                m = (_DQ_TOKEN if c == 0x22 else _SQ_TOKEN).match(buf, pos)
                if m is not None:  # the whole string is in this read
                    self._token(STRING, m.group())
                    pos = m.end()
                    continue
                self._begin(_DQ if c == 0x22 else _SQ, 0)
                self._pending.append(c)
                pos = self._scan(buf, pos + 1)
            elif c == 0x2D or 0x30 <= c <= 0x39:  # - or digit
                m = _NUMBER_TOKEN.match(buf, pos)
                if m is not None and m.end() < n and buf[m.end()] not in _NUMBER_NEXT:
                    text = m.group()
                    self._token(FLOAT if m.group(1) or m.group(2) else INTEGER, text)
                    pos = m.end()
                    continue
                self._begin(_NUM, _N_SIGN if c == 0x2D else (_N_ZERO if c == 0x30 else _N_INT))
                self._pending.append(c)
                pos = self._scan(buf, pos + 1)
            elif 0x61 <= c <= 0x7A:  # a-z
                end = _KEYWORD.match(buf, pos).end()  # type: ignore[union-attr]
                if end < n:
                    self._token(KEYWORD, buf[pos:end])
                    pos = end
                    continue
                self._begin(_KW, 0)
                pos = self._scan(buf, pos)
            else:
                self._lex_error(buf[pos:pos + 1])
                pos += 1
        return self._out

    def flush(self) -> list[Any]:
        """End of input: finish a trailing number or keyword; report an unfinished message."""
        self._out = []
        if self._kind == _KW:
            self._finish(KEYWORD)
        elif self._kind == _NUM and self._state in (_N_ZERO, _N_INT, _N_FRAC, _N_EXP):
            self._finish(FLOAT if self._state in (_N_FRAC, _N_EXP) or self._float else INTEGER)
        elif self._kind != _NONE:
            text = bytes(self._pending)
            self._begin(_NONE, 0)
            self._lex_error(text)
        if self._tokens and self._discard is None:
            self._emit_error("JSON parse error, premature EOI")
        self._reset_message()
        self._recovering = False
        self._discard = None
        return self._out

    def _begin(self, kind: int, state: int) -> None:
        self._pending = bytearray()
        self._kind = kind
        self._state = state
        self._float = False

    def _finish(self, kind: int) -> None:
        text = bytes(self._pending)
        self._begin(_NONE, 0)
        self._token(kind, text)

    def _scan(self, buf: bytes, i: int) -> int:
        """Continue the unfinished token over ``buf[i:]``; returns where lexing goes on."""
        start = i
        n = len(buf)
        kind = self._kind
        outcome = _PARTIAL
        if kind == _KW:
            i = _KEYWORD.match(buf, i).end()  # type: ignore[union-attr]
            outcome = _PARTIAL if i >= n else _DONE
        elif kind in (_DQ, _SQ):
            quote = 0x22 if kind == _DQ else 0x27
            if self._state and i < n:  # a backslash ended the previous read
                self._state = 0
                i += 1
                if not 0x20 <= buf[i - 1] <= 0xFD:
                    outcome = _ERROR
            if outcome == _PARTIAL:
                i = (_DQ_RUN if kind == _DQ else _SQ_RUN).match(buf, i).end()  # type: ignore
                if i < n:
                    c = buf[i]
                    if c == quote:
                        i += 1
                        outcome = _DONE
                    elif c == 0x5C and i + 1 >= n:
                        i = n
                        self._state = 1
                    else:  # a control character, 0xFE/0xFF, or a bad byte after a backslash
                        i += 2 if c == 0x5C else 1
                        outcome = _ERROR
        else:
            i, outcome = self._scan_number(buf, i)
        self._pending += buf[start:i]
        if outcome == _DONE:
            if kind == _NUM:
                self._finish(FLOAT if self._float else INTEGER)
            else:
                self._finish(STRING if kind != _KW else KEYWORD)
        elif outcome == _ERROR:
            text = bytes(self._pending)
            self._begin(_NONE, 0)
            self._lex_error(text)
        elif len(self._pending) > self.limits.max_message_bytes:
            self._begin(_NONE, 0)
            self._error("JSON token size limit exceeded")
            self._recovering = True
        return i

    def _scan_number(self, buf: bytes, i: int) -> tuple[int, int]:
        """QEMU's number grammar, -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)?, where a leading
        0 cannot be followed by a digit, nor by an exponent without a fraction. Resumable."""
        n = len(buf)
        state = self._state
        while i < n:
            c = buf[i]
            digit = 0x30 <= c <= 0x39
            if state == _N_SIGN:
                if not digit:
                    return i + 1, _ERROR
                state = _N_ZERO if c == 0x30 else _N_INT
                i += 1
            elif state == _N_ZERO:
                if digit:
                    return i + 1, _ERROR
                if c != 0x2E:
                    self._state = state
                    return i, _DONE
                state = _N_DOT
                i += 1
            elif state in (_N_INT, _N_FRAC, _N_EXP):
                i = _DIGITS.match(buf, i).end()  # type: ignore[union-attr]
                if i >= n:
                    break
                c = buf[i]
                if c == 0x2E and state == _N_INT:
                    state = _N_DOT
                    i += 1
                elif c in (0x45, 0x65) and state != _N_EXP:
                    state = _N_E
                    i += 1
                else:
                    self._state = state
                    self._float = state != _N_INT
                    return i, _DONE
            elif state == _N_DOT:
                if not digit:
                    return i + 1, _ERROR
                state = _N_FRAC
                i += 1
            elif state == _N_E:
                if c in (0x2B, 0x2D):
                    state = _N_ESIGN
                elif digit:
                    state = _N_EXP
                else:
                    return i + 1, _ERROR
                i += 1
            else:  # _N_ESIGN
                if not digit:
                    return i + 1, _ERROR
                state = _N_EXP
                i += 1
        self._state = state
        return i, _PARTIAL

    def _lex_error(self, text: bytes) -> None:
        """``text``: a token so far and the byte that cannot continue it (consumed)."""
        self._error(f"JSON parse error, stray '{_echo(text, self.limits.max_echo_chars)}'")
        if text.endswith(b"\n"):
            self._newline()  # resume at once: the next line is a new start
        else:
            self._recovering = True

    # -- streamer ------------------------------------------------------------------------------

    def _newline(self) -> None:
        self._discard = None

    def _token(self, kind: int, text: bytes) -> None:
        if self._discard is not None:
            if kind in _OPEN:
                if self._discard == 0 and kind == LCURLY:
                    self._discard = None  # a new message starts
                else:
                    self._discard += 1
                    return
            elif kind in _CLOSE:
                if self._discard > 0:
                    self._discard -= 1
                    if self._discard == 0:
                        self._discard = None  # the broken message has ended
                return
            else:
                return
        if kind == LCURLY:
            self._braces += 1
        elif kind == RCURLY:
            self._braces -= 1
        elif kind == LSQUARE:
            self._brackets += 1
        elif kind == RSQUARE:
            self._brackets -= 1
        lim = self.limits
        if self._size + len(text) + 1 > lim.max_message_bytes:
            self._error("JSON token size limit exceeded")
            return
        if len(self._tokens) + 1 > lim.max_tokens:
            self._error("JSON token count limit exceeded")
            return
        if self._braces + self._brackets > lim.max_depth:
            self._error("JSON nesting depth limit exceeded")
            return
        self._tokens.append((kind, text))
        self._size += len(text)
        if (self._braces > 0 or self._brackets > 0) and self._braces >= 0 and self._brackets >= 0:
            return
        tokens = self._tokens
        self._reset_message()
        try:
            self._out.append(_parse(tokens, lim))
        except _SyntaxError as err:
            self._emit_error(f"JSON parse error, {err}")
            self._discard = 0

    def _error(self, desc: str) -> None:
        """An error inside or between messages: report it (unless already discarding), drop the
        message so far, and discard up to its end."""
        depth = max(self._braces, 0) + max(self._brackets, 0)
        if self._discard is None:
            self._emit_error(desc)
            self._discard = depth if self._tokens else 0
        self._reset_message()

    def _emit_error(self, desc: str) -> None:
        self._out.append(JsonError(desc))

    def _reset_message(self) -> None:
        self._tokens = []
        self._size = 0
        self._braces = 0
        self._brackets = 0


# -- parser ------------------------------------------------------------------------------------


def _parse(tokens: list[tuple[int, bytes]], limits: Limits) -> Any:
    """One balanced run of tokens -> a value; raises _SyntaxError with QEMU's wording."""
    it: Iterator[tuple[int, bytes]] = iter(tokens)
    look: list[tuple[int, bytes] | None] = [None]

    def peek() -> tuple[int, bytes] | None:
        if look[0] is None:
            look[0] = next(it, None)
        return look[0]

    def pop() -> tuple[int, bytes] | None:
        tok = peek()
        look[0] = None
        return tok

    # frames: [container, is_object, key (objects), expecting_key (objects)]
    stack: list[list[Any]] = []
    while True:
        # -- parse a value (or open a container) --
        tok = peek()
        if tok is None:
            raise _SyntaxError("premature EOI")
        kind, text = tok
        if kind in _OPEN:
            pop()
            nxt = peek()
            if nxt is None:
                raise _SyntaxError("premature EOI")
            closer = RCURLY if kind == LCURLY else RSQUARE
            if nxt[0] != closer:
                stack.append([{} if kind == LCURLY else [], kind == LCURLY, None, True])
                continue
            pop()
            value: Any = {} if kind == LCURLY else []
        elif kind == STRING:
            pop()
            value = _string(text, limits)
        elif kind == INTEGER:
            pop()
            value = _integer(text)
        elif kind == FLOAT:
            pop()
            value = float(text)
        elif kind == KEYWORD:
            pop()
            if text == b"true":
                value = True
            elif text == b"false":
                value = False
            elif text == b"null":
                value = None
            else:
                raise _SyntaxError(f"invalid keyword '{_echo(text, limits.max_echo_chars)}'")
        else:
            raise _SyntaxError("expecting value")
        # -- deliver the value to its container(s) --
        while True:
            if not stack:
                if peek() is not None:  # cannot happen with balanced input; be safe
                    raise _SyntaxError("expecting value")
                return value
            frame = stack[-1]
            container, is_object = frame[0], frame[1]
            if is_object and frame[3]:  # a key
                if not isinstance(value, str):
                    raise _SyntaxError("key is not a string in object")
                sep = pop()
                if sep is None:
                    raise _SyntaxError("premature EOI")
                if sep[0] != COLON:
                    raise _SyntaxError("missing : in object pair")
                frame[2], frame[3] = value, False
                break  # parse the member's value
            if is_object:
                if frame[2] in container:
                    raise _SyntaxError("duplicate key")
                container[frame[2]] = value
            else:
                container.append(value)
            sep = pop()
            if sep is None:
                raise _SyntaxError("premature EOI")
            closer = RCURLY if is_object else RSQUARE
            if sep[0] == closer:
                stack.pop()
                value = container
                continue  # deliver the finished container to its parent
            if sep[0] != COMMA:
                raise _SyntaxError("expected separator in dict" if is_object
                                   else "expected separator in list")
            frame[3] = is_object
            break  # parse the next key or element


def _integer(text: bytes) -> int | float:
    if len(text) <= 21:
        v = int(text)
        if _INT64_MIN <= v <= _UINT64_MAX:
            return v
    return float(text)


_ESCAPES = {ord('"'): '"', ord("'"): "'", ord("\\"): "\\", ord("/"): "/", ord("b"): "\b",
            ord("f"): "\f", ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")
# noncharacters QEMU refuses (U+FDD0..U+FDEF and U+xFFFE/U+xFFFF of every plane)
_NONCHAR = re.compile("[\ufdd0-\ufdef\ufffe\uffff\U0001fffe\U0001ffff\U0002fffe\U0002ffff"
                      "\U0003fffe\U0003ffff\U0004fffe\U0004ffff\U0005fffe\U0005ffff\U0006fffe"
                      "\U0006ffff\U0007fffe\U0007ffff\U0008fffe\U0008ffff\U0009fffe\U0009ffff"
                      "\U000afffe\U000affff\U000bfffe\U000bffff\U000cfffe\U000cffff\U000dfffe"
                      "\U000dffff\U000efffe\U000effff\U000ffffe\U000fffff\U0010fffe\U0010ffff]")


def _valid_codepoint(cp: int) -> bool:
    if cp < 0 or cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        return False
    return not (0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE)


def _raw(segment: bytes) -> str:
    """Unescaped string bytes: (modified) UTF-8, no surrogates, no noncharacters."""
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError:
        try:  # modified UTF-8 spells U+0000 as C0 80
            text = segment.replace(b"\xc0\x80", b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            raise _SyntaxError("invalid UTF-8 sequence in string") from None
    if _NONCHAR.search(text):
        raise _SyntaxError("invalid UTF-8 sequence in string")
    return text


def _string(token: bytes, limits: Limits) -> str:
    body = token[1:-1]
    if b"\\" not in body:
        return _raw(body)
    parts: list[str] = []
    i, n = 0, len(body)
    while i < n:
        j = body.find(b"\\", i)
        if j < 0:
            parts.append(_raw(body[i:]))
            break
        if j > i:
            parts.append(_raw(body[i:j]))
        esc = body[j + 1]  # the lexer guarantees a character after a backslash
        if esc in _ESCAPES:
            parts.append(_ESCAPES[esc])
            i = j + 2
            continue
        if esc != ord("u"):
            raise _SyntaxError("invalid escape sequence in string")
        hex4 = body[j + 2:j + 6]
        end = j + 6
        cp = int(hex4, 16) if _HEX4.fullmatch(hex4) else -1
        if 0xD800 <= cp <= 0xDBFF and body[end:end + 2] == b"\\u":
            trail = body[end + 2:end + 6]
            low = int(trail, 16) if _HEX4.fullmatch(trail) else -1
            if 0xDC00 <= low <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) + (low & 0x3FF)
                end += 6
            else:
                cp = -1
        if not _valid_codepoint(cp):
            shown = _echo(body[j:min(end, n)], limits.max_echo_chars)
            raise _SyntaxError(f"{shown} is not a valid Unicode character")
        parts.append(chr(cp))
        i = end
    return "".join(parts)


def parse_document(text: str | bytes, limits: Limits | None = None) -> list[Any]:
    """Parse a whole document (tests, tools): the values and errors, as :meth:`JsonStream.feed`
    followed by :meth:`JsonStream.flush`."""
    stream = JsonStream(limits)
    data = text.encode("utf-8") if isinstance(text, str) else text
    return stream.feed(data) + stream.flush()
