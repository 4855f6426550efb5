"""Pre-built WebSocket frames (publisher/server.py): the same bytes websockets itself would write."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from publisher.server import _Framer, text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frames_match_the_library_serialisation(length):
    payload = b"x" * length
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def test_one_event_is_framed_once_and_a_new_one_is_not_confused_with_it():
    framer = _Framer()
    a, b = b'{"kind":"trade","seq":1}', b'{"kind":"trade","seq":2}'
    fa = framer(a)
    assert framer(a) is fa  # every client of the event gets the same bytes object
    assert framer(b).endswith(b) and framer(a).endswith(a)
