"""The one RFC 6455 frame encoder (pipeline/wsframe.py) writes what the websockets library writes and reads.

Server frames (publisher, simulators) must equal websockets' own serialisation byte for byte;
client frames (ingest) are masked with a fresh key, so they are checked by parsing them back with
websockets' parser as a server would.
"""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from pipeline import wsframe

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]
OPCODES = [wsframe.OP_TEXT, wsframe.OP_BINARY, wsframe.OP_PING, wsframe.OP_PONG, wsframe.OP_CLOSE]


def _parse_as_server(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True)  # a server requires masked client frames
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize(("opcode", "length"), [(op, n) for op in OPCODES for n in LENGTHS
                                                 if op < 0x8 or n <= 125])  # control frames: 125 bytes at most
def test_server_frames_equal_the_library_serialisation(opcode, length):
    payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    assert wsframe.server_frame(payload, opcode) == Frame(Opcode(opcode), payload).serialize(mask=False)


@pytest.mark.parametrize("length", LENGTHS)
def test_client_frames_are_masked_and_parse_back(length):
    payload = b"y" * length
    raw = wsframe.client_frame(wsframe.OP_BINARY, payload)
    assert raw[1] & 0x80  # the mask bit (RFC 6455 section 5.3)
    frame = _parse_as_server(raw)
    assert (frame.opcode, frame.data, frame.fin) == (Opcode.BINARY, payload, True)


def test_each_client_frame_gets_a_fresh_mask_key():
    head = len(wsframe.frame_header(5, wsframe.OP_TEXT, masked=True))
    keys = {wsframe.client_frame(wsframe.OP_TEXT, b"hello")[head:head + 4] for _ in range(8)}
    assert len(keys) == 8


def test_a_non_final_client_fragment_keeps_fin_clear():
    frame = _parse_as_server(wsframe.client_frame(wsframe.OP_TEXT, b"part", fin=False))
    assert (frame.opcode, frame.data, frame.fin) == (Opcode.TEXT, b"part", False)


def test_close_payload_carries_the_code_and_a_capped_reason():
    assert wsframe.close_payload(1000, "bye") == b"\x03\xe8bye"
    assert len(wsframe.close_payload(1001, "x" * 500)) == 2 + 120
