"""The lean client-side frame reader against frames written by the websockets library."""

from hypothesis import given, settings, strategies as st
import pytest
from websockets.frames import Frame, Opcode

from ingest.wsframes import (OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, FrameReader, WebSocketError, apply_mask,
                             check_response, encode_frame)
from websockets.utils import accept_key


def server_frame(opcode, data, fin=True):
    """Bytes of a frame as a server writes it (unmasked), serialized by websockets."""
    return Frame(opcode, data, fin).serialize(mask=False)


payloads = st.binary(max_size=70000)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.tuples(st.sampled_from([Opcode.TEXT, Opcode.BINARY]), payloads, st.integers(1, 3)),
                         max_size=6),
       cuts=st.lists(st.integers(0, 300000), max_size=8))
def test_reader_returns_every_message_whatever_the_tcp_split(messages, cuts):
    wire = b""
    for op, data, parts in messages:
        size = -(-len(data) // parts) or 1
        chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        for i, chunk in enumerate(chunks):
            wire += server_frame(op if i == 0 else Opcode.CONT, chunk, fin=(i == len(chunks) - 1))
        wire += server_frame(Opcode.PING, b"p")  # control frames may come between messages
    reader = FrameReader()
    got = []
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    for a, b in zip(points, points[1:]):
        got += reader.feed(wire[a:b])
    data_msgs = [(op, p) for op, p in got if op in (OP_TEXT, OP_BINARY)]
    assert data_msgs == [(int(op), data) for op, data, _ in messages]
    assert [op for op, _ in got].count(OP_PING) == len(messages)
    assert not reader.buf


def test_control_frames_between_fragments_are_delivered_in_order():
    wire = (server_frame(Opcode.TEXT, b"ab", fin=False) + server_frame(Opcode.PING, b"x")
            + server_frame(Opcode.CONT, b"cd"))
    assert FrameReader().feed(wire) == [(OP_PING, b"x"), (OP_TEXT, b"abcd")]


@pytest.mark.parametrize("wire,message", [
    (Frame(Opcode.TEXT, b"x").serialize(mask=True), "masked"),
    (server_frame(Opcode.CONT, b"x"), "continuation"),
    (bytes([0x83, 0x00]), "unknown opcode"),
    (bytes([0xC1, 0x00]), "reserved bits"),
])
def test_protocol_violations_are_errors(wire, message):
    with pytest.raises(WebSocketError, match=message):
        FrameReader().feed(wire)


def test_oversized_frame_is_refused_before_it_is_buffered():
    with pytest.raises(WebSocketError, match="exceeds"):
        FrameReader(max_size=1000).feed(server_frame(Opcode.TEXT, b"x" * 1001)[:20])


def test_client_frames_are_masked_and_readable_by_websockets():
    raw = encode_frame(OP_CLOSE, b"\x03\xe8bye")
    assert raw[1] & 0x80  # mask bit
    mask = raw[2:6]
    assert apply_mask(raw[6:], mask) == b"\x03\xe8bye"
    long = encode_frame(OP_TEXT, b"y" * 70000)
    assert long[1] == 0x80 | 127


def test_handshake_response_is_checked():
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    good = f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}".encode()
    check_response(good, key)
    with pytest.raises(WebSocketError, match="refused"):
        check_response(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5", key)
    with pytest.raises(WebSocketError, match="Accept"):
        check_response(good.replace(accept_key(key).encode(), b"nope"), key)
