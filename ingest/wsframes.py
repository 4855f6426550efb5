"""RFC 6455 for the client side of a market-data connection, sans I/O and lean.

Why not websockets' own protocol object here: its generator-based parser cost about
a quarter of the ingest process's CPU at 10k frames/s (py-spy, see the closing note
of the core pipeline issue).  A market-data client needs only a small part of the
RFC: an HTTP/1.1 upgrade (section 4.1), unmasked server frames (5.1: a server must
not mask), fragmentation (5.4), ping/pong (5.5.2-3) and close (5.5.1); no
extensions.  websockets still provides the key helpers and the C masking routine,
and serves as the reference in the tests (frames it writes are parsed here).  The frames
we send are encoded by the project's one encoder, pipeline/wsframe.py.
"""

from __future__ import annotations

import base64
import os
import struct

from websockets.utils import accept_key

from pipeline.wsframe import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, apply_mask,  # noqa: F401
                              client_frame, close_payload)
_DATA_OPS = (OP_CONT, OP_TEXT, OP_BINARY)
_H16 = struct.Struct("!H")
_H64 = struct.Struct("!Q")


class WebSocketError(ConnectionError):
    """The server broke the protocol (bad handshake, masked frame, oversized frame...)."""


def build_request(host: str, port: int, resource: str, secure: bool) -> tuple[bytes, str]:
    """The upgrade request (RFC 6455 section 4.1) and the key it carries."""
    key = base64.b64encode(os.urandom(16)).decode()
    default_port = 443 if secure else 80
    host_header = host if port == default_port else f"{host}:{port}"
    request = (f"GET {resource} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"User-Agent: l2pipeline\r\n\r\n")
    return request.encode("ascii"), key


def check_response(head: bytes, key: str) -> None:
    """Validate the server's 101 response head (without the final blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        raise WebSocketError(f"upgrade refused: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        raise WebSocketError("upgrade refused: no 'Upgrade: websocket' header")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise WebSocketError("upgrade refused: wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise WebSocketError("server negotiated an extension we did not offer")


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 section 5.3: a client must mask); pipeline/wsframe.py builds it."""
    return client_frame(opcode, payload, fin)


def encode_close(code: int, reason: str = "") -> bytes:
    return client_frame(OP_CLOSE, close_payload(code, reason))


class FrameReader:
    """Incremental parser of server frames: ``feed(bytes)`` -> complete messages.

    Returns a list of ``(opcode, payload)``: data messages already reassembled from
    fragments (opcode TEXT or BINARY), and control frames as they come.
    """

    __slots__ = ("buf", "max_size", "_frag_op", "_frags")

    def __init__(self, max_size: int = 16 * 1024 * 1024):
        self.buf = bytearray()
        self.max_size = max_size
        self._frag_op = None
        self._frags: list[bytes] = []

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf
        buf += data
        out = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise WebSocketError("server frame is masked (RFC 6455 section 5.1)")
            if b0 & 0x70:
                raise WebSocketError("reserved bits set without a negotiated extension")
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = _H16.unpack_from(buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = _H64.unpack_from(buf, pos + 2)[0]
                head = 10
            if n > self.max_size:
                raise WebSocketError(f"frame of {n} bytes exceeds the {self.max_size} byte limit")
            if end - pos < head + n:
                break
            start = pos + head
            payload = bytes(buf[start:start + n])
            pos = start + n
            op = b0 & 0x0F
            fin = b0 & 0x80
            if op >= 0x8:
                if not fin or n > 125:
                    raise WebSocketError("fragmented or oversized control frame")
                out.append((op, payload))
            elif op == OP_CONT:
                if self._frag_op is None:
                    raise WebSocketError("continuation frame without a start")
                self._frags.append(payload)
                if sum(map(len, self._frags)) > self.max_size:
                    raise WebSocketError("fragmented message exceeds the size limit")
                if fin:
                    out.append((self._frag_op, b"".join(self._frags)))
                    self._frag_op, self._frags = None, []
            elif op in (OP_TEXT, OP_BINARY):
                if self._frag_op is not None:
                    raise WebSocketError("new message inside a fragmented one")
                if fin:
                    out.append((op, payload))
                else:
                    self._frag_op, self._frags = op, [payload]
            else:
                raise WebSocketError(f"unknown opcode {op}")
        if pos:
            del buf[:pos]
        return out
