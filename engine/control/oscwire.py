"""A bounded OSC 1.0 decoder for datagrams from anyone on the network.

python-osc's parser is built for trusted peers; on hostile input it can loop forever (a bundle
element size of -4 never advances: one 20-byte datagram froze the event loop), recurse without
limit (arrays 2,000 deep), raise outside its ``ParseError`` (invalid UTF-8 in an address), and
log a root-logger warning per unknown type tag. See ``docs/osc-hardening.md`` for the upstream
report. This decoder is used instead for every incoming datagram:

- every size is checked before it is used: element sizes must be positive, multiples of 4 and
  inside the datagram; strings and blobs must end inside it; the walk always moves forward, so
  the work is linear in the datagram's length;
- nesting is bounded (bundles :data:`MAX_BUNDLE_DEPTH`, arrays :data:`MAX_ARRAY_DEPTH`), as are
  the messages per datagram (:data:`MAX_MESSAGES`) and the arguments per message
  (:data:`MAX_ARGS`);
- addresses must be UTF-8 and start with ``/``; string arguments must be UTF-8;
- anything else raises :class:`OscDecodeError` whose ``reason`` is a short fixed key (for a
  counter) and whose message says what was wrong, where.

Supported argument types (OSC 1.0 and the common 1.1 additions): ``i f s S b h t d c r m T F N
I`` and arrays ``[ ]``. ``T``/``F`` decode to bool, ``N`` to None, ``I`` (infinitum/impulse)
to ``math.inf``, ``t`` to an int (NTP time tag), ``c`` to a one-character str, ``m`` and ``r``
to ``bytes``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

MAX_BUNDLE_DEPTH = 4
MAX_ARRAY_DEPTH = 4
MAX_MESSAGES = 64
MAX_ARGS = 64
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4

BUNDLE_TAG = b"#bundle\x00"
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_F32 = struct.Struct(">f")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")


class OscDecodeError(ValueError):
    """A datagram that is not well-formed OSC. ``reason`` is a short key for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OscMessage:
    """One decoded message: its address and arguments (Python values)."""

    address: str
    args: list[Any] = field(default_factory=list)


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _string(data: bytes, pos: int, end: int, what: str, *, utf8_reason: str) -> tuple[str, int]:
    nul = data.find(b"\x00", pos, end)
    if nul < 0:
        raise OscDecodeError("unterminated_string", f"{what} at byte {pos} has no NUL terminator")
    nxt = pos + _pad4(nul - pos + 1)
    if nxt > end:
        raise OscDecodeError("bad_padding", f"{what} at byte {pos} is not padded to 4 bytes inside the datagram")
    try:
        text = data[pos:nul].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OscDecodeError(utf8_reason, f"{what} at byte {pos} is not UTF-8 ({exc.reason})") from None
    return text, nxt


def _need(pos: int, n: int, end: int, what: str) -> None:
    if pos + n > end:
        raise OscDecodeError("truncated", f"{what} at byte {pos} needs {n} bytes, only {max(0, end - pos)} left")


def _message(data: bytes, pos: int, end: int) -> OscMessage:
    address, pos = _string(data, pos, end, "address", utf8_reason="bad_address")
    if not address.startswith("/"):
        raise OscDecodeError("bad_address", f"address {address[:40]!r} does not start with '/'")
    if pos >= end:
        return OscMessage(address, [])  # no type tag string: an OSC 1.0 message without arguments
    if data[pos] != ord(","):
        raise OscDecodeError("bad_type_tags", f"type tag string at byte {pos} does not start with ','")
    tags, pos = _string(data, pos, end, "type tag string", utf8_reason="bad_type_tags")
    args: list[Any] = []
    stack: list[list[Any]] = [args]
    count = 0
    for i, tag in enumerate(tags[1:]):
        cur = stack[-1]
        if tag == "[":
            if len(stack) > MAX_ARRAY_DEPTH:
                raise OscDecodeError("too_deep", f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
            new: list[Any] = []
            cur.append(new)
            stack.append(new)
            continue
        if tag == "]":
            if len(stack) == 1:
                raise OscDecodeError("bad_type_tags", f"type tag {i + 1}: ']' without '['")
            stack.pop()
            continue
        count += 1
        if count > MAX_ARGS:
            raise OscDecodeError("too_many_args", f"more than {MAX_ARGS} arguments")
        if tag == "i":
            _need(pos, 4, end, "int32")
            cur.append(_I32.unpack_from(data, pos)[0])
            pos += 4
        elif tag == "f":
            _need(pos, 4, end, "float32")
            cur.append(_F32.unpack_from(data, pos)[0])
            pos += 4
        elif tag in ("s", "S"):
            text, pos = _string(data, pos, end, "string argument", utf8_reason="bad_string")
            cur.append(text)
        elif tag == "b":
            _need(pos, 4, end, "blob size")
            size = _I32.unpack_from(data, pos)[0]
            if size < 0 or pos + 4 + _pad4(size) > end:
                raise OscDecodeError("bad_blob", f"blob at byte {pos} claims {size} bytes")
            cur.append(bytes(data[pos + 4:pos + 4 + size]))
            pos += 4 + _pad4(size)
        elif tag == "h":
            _need(pos, 8, end, "int64")
            cur.append(_I64.unpack_from(data, pos)[0])
            pos += 8
        elif tag == "t":
            _need(pos, 8, end, "time tag")
            cur.append(_U64.unpack_from(data, pos)[0])
            pos += 8
        elif tag == "d":
            _need(pos, 8, end, "double")
            cur.append(_F64.unpack_from(data, pos)[0])
            pos += 8
        elif tag == "c":
            _need(pos, 4, end, "char")
            code = _U32.unpack_from(data, pos)[0]
            if code > 0x10FFFF:
                raise OscDecodeError("bad_string", f"char at byte {pos} is not a code point")
            cur.append(chr(code))
            pos += 4
        elif tag in ("r", "m"):
            _need(pos, 4, end, "rgba/midi")
            cur.append(bytes(data[pos:pos + 4]))
            pos += 4
        elif tag in ("T", "F"):
            cur.append(tag == "T")
        elif tag == "N":
            cur.append(None)
        elif tag == "I":
            cur.append(math.inf)
        else:
            raise OscDecodeError("unknown_type_tag", f"unknown type tag {tag!r} (type tag {i + 1})")
    if len(stack) != 1:
        raise OscDecodeError("bad_type_tags", "'[' without ']' in the type tags")
    if pos != end:
        raise OscDecodeError("trailing_bytes", f"{end - pos} bytes after the last argument")
    return OscMessage(address, args)


def decode(data: bytes) -> list[OscMessage]:
    """All messages in one datagram (bundles flattened, in order; [] for an empty bundle).

    Raises :class:`OscDecodeError` for anything that is not well-formed OSC. The work is
    linear in ``len(data)``: every step moves forward and every nesting is bounded.
    """
    if len(data) > MAX_DATAGRAM:
        raise OscDecodeError("too_large", f"{len(data)} bytes (at most {MAX_DATAGRAM})")
    if not data:
        raise OscDecodeError("empty", "empty datagram")
    bundle = data.startswith(BUNDLE_TAG)
    if not bundle and data[0] != ord("/"):
        raise OscDecodeError("not_osc", "does not start with '/' (a message) or '#bundle' (a bundle)")
    if len(data) % 4:
        raise OscDecodeError("bad_padding", f"{len(data)} bytes is not a multiple of 4")
    out: list[OscMessage] = []
    if bundle:
        _bundle(data, 0, len(data), 1, out)
    else:
        out.append(_message(data, 0, len(data)))
    return out


def _bundle(data: bytes, pos: int, end: int, depth: int, out: list[OscMessage]) -> None:
    if depth > MAX_BUNDLE_DEPTH:
        raise OscDecodeError("too_deep", f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
    _need(pos, 16, end, "bundle header")
    pos += 16  # "#bundle\0" + 8-byte time tag (immediate delivery: the show applies at once)
    while pos < end:
        _need(pos, 4, end, "bundle element size")
        size = _I32.unpack_from(data, pos)[0]
        if size <= 0 or size % 4 or pos + 4 + size > end:
            raise OscDecodeError("bad_element_size", f"bundle element at byte {pos} claims {size} bytes")
        start, stop = pos + 4, pos + 4 + size
        if data.startswith(BUNDLE_TAG, start):
            _bundle(data, start, stop, depth + 1, out)
        elif data[start] == ord("/"):
            if len(out) >= MAX_MESSAGES:
                raise OscDecodeError("too_many_messages", f"more than {MAX_MESSAGES} messages in one datagram")
            out.append(_message(data, start, stop))
        else:
            raise OscDecodeError("not_osc", f"bundle element at byte {pos} is neither a message nor a bundle")
        pos = stop
