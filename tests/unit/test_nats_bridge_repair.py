"""The NATS bridge keeps each stream contiguous after losses of its own, without a NATS server:
its publishing is recorded by a stand-in, shared memory and the trade ring are real.

- a book whose deltas the bridge missed is taken again from shared memory and published as a
  snapshot (``Nats-Msg-Id`` ending in ``:s``) before the delta that showed the gap;
- missed trades are read from the trade ring and published, in order, before the trade that
  showed the gap; what the ring no longer has is counted as lost;
- a message already covered (by a refill or a snapshot of its own) is not published twice;
- one message in ACK_EVERY asks for a PubAck, and the KV values name that message's stream seq.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import natsbus, schema
from pipeline.config import parse_config
from pipeline.shm import BookState, BookWriter
from pipeline.trade_ring import TradeRingWriter
from publisher import nats_bridge
from publisher.nats_bridge import Bridge, NatsBridgeConfig


class Recorder:
    """nc.publish and js.publish_async of nats-py, recording (subject, headers, payload, acked)."""

    def __init__(self):
        self.sent: list[tuple[str, dict, bytes, bool]] = []

    async def publish(self, subject, payload, headers=None):
        self.sent.append((subject, headers, payload, False))

    async def publish_async(self, subject, payload, headers=None):
        self.sent.append((subject, headers, payload, True))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(SimpleNamespace(seq=len(self.sent)))  # the stream seq: its place in the stream
        return fut

    def ids(self) -> list[str]:
        return [h[natsbus.MSG_ID_HEADER] for _, h, _, _ in self.sent]


class KvRecorder:
    def __init__(self):
        self.values: dict[str, natsbus.KvSnapshot] = {}

    async def put(self, key, value):
        self.values[key] = natsbus.decode_kv(value)


@pytest.fixture
def bridge(tmp_path: Path):
    config = parse_config('[pipeline]\nrun_dir = "run"\n[exchanges.ex]\nadapter = "binance"\nsymbols = ["A"]\n',
                          tmp_path)
    books = BookWriter(config.shm_prefix, "ex", ["A"], depth=3, epoch=7)
    ring = TradeRingWriter(config.shm_prefix, "ex", ["A"], 8, epoch=7)
    b = Bridge(config, NatsBridgeConfig(url="nats://127.0.0.1:1"))
    b.nc = b.js = Recorder()
    b.kv = KvRecorder()
    yield b, books, ring
    for r in (*b._books.values(), *b._rings.values()):
        r.close()
    books.close()
    ring.close()
    for p in Path("/dev/shm").glob(config.shm_prefix + "_*"):
        p.unlink(missing_ok=True)


def _l2(seq: int, snapshot: bool = False, bids=(), asks=()) -> tuple[bytes, bytes]:
    return schema.L2.topic("ex", "A"), schema.encode(schema.L2Update(
        exchange="ex", symbol="A", epoch=7, seq=seq, ts_exchange=seq, ts_received=seq, snapshot=snapshot,
        state="live", depth=3, bids=list(bids), asks=list(asks)))


def _trade(seq: int) -> tuple[bytes, bytes]:
    return schema.TRADE.topic("ex", "A"), schema.encode(schema.Trade(
        exchange="ex", symbol="A", epoch=7, seq=seq, ts_exchange=seq, ts_received=seq, price=100.0 + seq,
        amount=0.5, side="buy", trade_id=f"t{seq}"))


def _run(bridge: Bridge, *messages: tuple[bytes, bytes]) -> None:
    async def main():
        for topic, payload in messages:
            await bridge._forward(topic, payload)
    asyncio.run(main())


def test_a_book_gap_of_the_bridge_is_repaired_from_shared_memory(bridge):
    b, books, _ = bridge
    _run(b, _l2(1, True, bids=[(10.0, 1.0)], asks=[(11.0, 1.0)]), _l2(2, bids=[(9.0, 2.0)]))
    # deltas 3..5 never reached the bridge; shared memory has the book at 5
    books.write_view(0, 5, BookState.LIVE, 5, 5, 0, [10.0, 9.5], [1.0, 3.0], [11.0], [1.0])
    _run(b, _l2(6, asks=[(11.5, 4.0)]), _l2(4), _l2(7, bids=[(9.5, 0.0)]))
    assert b.js.ids() == ["l2.ex.A:7:1", "l2.ex.A:7:2", "l2.ex.A:7:5:s", "l2.ex.A:7:6", "l2.ex.A:7:7"]
    snap = schema.decode_l2(b.js.sent[2][2])
    assert snap.snapshot and snap.seq == 5 and snap.bids == [(10.0, 1.0), (9.5, 3.0)] and snap.asks == [(11.0, 1.0)]
    assert b.stats.snapshots_made == 1
    book = b.trackers[schema.L2.topic("ex", "A")].book
    assert book.seq == 7 and book.top() == ([(10.0, 1.0)], [(11.0, 1.0), (11.5, 4.0)])


def test_a_book_gap_waits_for_shared_memory_that_is_behind(bridge):
    b, books, _ = bridge
    books.write_view(0, 2, BookState.LIVE, 2, 2, 0, [10.0], [1.0], [11.0], [1.0])
    _run(b, _l2(1, True, bids=[(10.0, 1.0)]), _l2(6))  # shm at 2, the delta at 6: no snapshot can be made
    assert b.js.ids() == ["l2.ex.A:7:1", "l2.ex.A:7:6"] and b.stats.snapshots_made == 0


def test_missed_trades_are_refilled_from_the_ring_in_order(bridge):
    b, _, ring = bridge
    for seq in range(1, 21):  # the ring keeps the last 8: 13..20
        ring.append(0, seq, seq, seq, 100.0 + seq, 0.5, "buy", f"t{seq}")
    _run(b, _trade(1), _trade(15), _trade(16), _trade(14), _trade(21))
    ids = b.js.ids()
    assert ids == [f"trade.ex.A:7:{s}" for s in [1, 13, 14, 15, 16, 17, 18, 19, 20, 21]]
    assert [schema.decode_trade(p).trade_id for _, _, p, _ in b.js.sent[1:4]] == ["t13", "t14", "t15"]
    assert b.stats.trades_refilled == 2 + 4 and b.stats.trades_lost == 11  # 2..12 were gone


def test_one_message_in_ack_every_is_acked_and_the_kv_names_its_stream_seq(bridge, monkeypatch):
    b, _, _ = bridge
    monkeypatch.setattr(nats_bridge, "ACK_EVERY", 4)
    b._unacked = 3
    _run(b, *[_l2(1, True, bids=[(10.0, 1.0)])] + [_l2(s, bids=[(10.0, float(s))]) for s in range(2, 7)])
    assert [acked for *_, acked in b.js.sent] == [True, False, False, False, True, False]
    asyncio.run(b.write_kv())
    kv = b.kv.values["l2.ex.A"]
    assert kv.stream_seq == 5  # the newest acked message; the state includes more (seq 6): readers drop those
    assert schema.decode_l2(kv.payload).seq == 6 and schema.decode_l2(kv.payload).bids == [(10.0, 6.0)]
    _run(b, _l2(7))
    assert b.js.sent[-1][3] is True  # the first message after a KV write is acked
