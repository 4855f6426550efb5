"""The NATS JetStream bridge (`pipeline bridge nats`): the bus of this host into a JetStream stream.

Fan-out to many consumers and across sites is NATS's job (clustering, leaf nodes, auth: its own
config, docs/remote.md); this process only carries the bus there, as pipeline/natsbus.py defines:
every message of every registered kind to ``PREFIX.KIND.EXCHANGE.SYMBOL`` with seq/epoch headers
and a dedup id, and the latest state of each book (and of every other conflatable kind) in a KV
bucket every ``kv_interval_s`` (all of them every KV_REFRESH_S), with the stream sequence it
corresponds to.

It keeps the stream contiguous when it loses bus messages itself (it was slow past the bus's
high-water mark, or it restarted): a book with a gap is taken again from shared memory and a
snapshot of it is published into the stream (and the KV bucket) at once; missing trades are read
from the trade ring and published in order before the trade that showed the gap.

The reader is the core's ``bus.Reader``, stepped from this coroutine, so publishing holds the
reading back: nats-py's ``publish_async`` waits when too many acks are outstanding, and then the
bus's high-water mark (not this process's memory) takes the excess (it is counted as gaps).

Acks: one message in ACK_EVERY asks JetStream for a PubAck (``publish_async``); the others are
plain publishes to the stream's subjects (JetStream stores them all the same, in the order one
connection sent them).  A PubAck per message cost more than everything else the bridge does
(py-spy: a reply inbox, a future, a random token, a JSON PubAck decoded per message; about 60% of
the CPU); acked every ACK_EVERY messages, with at most ACKS_IN_FLIGHT acks outstanding, the
bridge is still held back when JetStream falls behind (at most ACK_EVERY * ACKS_IN_FLIGHT
messages unconfirmed), a failure still shows (the next ack is an error, counted in ``errors``),
and the KV values name the stream sequence of an acked message published before their states
were taken: the states include at least every message up to it, which is all a consumer starting
there needs (it drops what a book already has by seq).

Config ``[bridges.nats]``: ``url`` (required), ``prefix``, ``stream``, ``bucket``,
``max_age_s`` (the stream's retention, 3600), ``max_bytes`` (-1: unlimited), ``replicas`` (1),
``duplicate_window_s`` (120), ``kv_interval_s`` (1.0), ``exchanges`` (default: all), ``domain``
(the JetStream domain, when the stream lives in another one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline import bus, natsbus, schema, shards
from pipeline.config import (Config, SectionContext, check_keys, expect_number, expect_pos_int, expect_str,
                             expect_url)
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

NAME = "nats"
STATS_EVERY_S = 1.0
KV_REFRESH_S = 10.0  # every state is written again this often (write_kv)
ACK_EVERY = 64  # one message in this many asks for a PubAck (module docstring)
ACKS_IN_FLIGHT = 64  # outstanding PubAcks before publishing waits


@dataclass(frozen=True)
class NatsBridgeConfig:
    url: str
    prefix: str = natsbus.DEFAULT_PREFIX
    stream: str = natsbus.DEFAULT_STREAM
    bucket: str = natsbus.DEFAULT_BUCKET
    max_age_s: float = 3600.0
    max_bytes: int = -1
    replicas: int = 1
    duplicate_window_s: float = 120.0
    kv_interval_s: float = 1.0
    exchanges: tuple[str, ...] | None = None
    domain: str | None = None  # the JetStream domain of the stream (a leaf node's consumers: the hub's)


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def parse_config(table: dict, key: str, ctx: SectionContext) -> NatsBridgeConfig:
    check_keys(table, set(NatsBridgeConfig.__dataclass_fields__), key)
    if "url" not in table:
        raise ConfigError(f"{key}.url", 'missing: the NATS server to publish to, e.g. "nats://127.0.0.1:4222"')
    kw: dict[str, Any] = {"url": expect_url(table["url"], f"{key}.url", ("nats", "tls", "ws", "wss"))}
    for name in ("prefix", "stream", "bucket", "domain"):
        if name in table:
            value = expect_str(table[name], f"{key}.{name}")
            if not set(value) <= _NAME_CHARS:
                raise ConfigError(f"{key}.{name}", f"expected letters, digits, '_' and '-' only, got \"{value}\"")
            kw[name] = value
    for name in ("max_age_s", "duplicate_window_s", "kv_interval_s"):
        if name in table:
            kw[name] = expect_number(table[name], f"{key}.{name}", positive=True)
    for name in ("replicas",):
        if name in table:
            kw[name] = expect_pos_int(table[name], f"{key}.{name}")
    if "max_bytes" in table:
        value = table["max_bytes"]
        if value != -1:
            expect_pos_int(value, f"{key}.max_bytes")
        kw["max_bytes"] = value
    if "exchanges" in table:
        names = table["exchanges"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{key}.exchanges", f"expected a list of exchange names, got {names!r}")
        for n in names:
            if n not in ctx.exchanges:
                raise ConfigError(f"{key}.exchanges", f'no exchange "{n}" in the config')
        kw["exchanges"] = tuple(names)
    return NatsBridgeConfig(**kw)


@dataclass
class _Stream:
    """What the bridge knows of one bus stream (kind, exchange, symbol)."""

    epoch: int = 0
    seq: int = 0
    changed: bool = False  # since the last KV write


@dataclass
class BridgeStats:
    published: int = 0
    snapshots_made: int = 0  # books taken again from shared memory after a gap of the bridge's own
    trades_refilled: int = 0
    trades_lost: int = 0
    kv_writes: int = 0
    errors: int = 0
    started: float = field(default_factory=time.time)


class Bridge:
    """One bridge process: the bus of the chosen exchanges -> JetStream (module docstring)."""

    def __init__(self, config: Config, settings: NatsBridgeConfig):
        self.config, self.settings = config, settings
        self.exchanges = list(settings.exchanges or config.exchanges)
        self.stats = BridgeStats()
        self.streams: dict[bytes, _Stream] = {}
        self.trackers: dict[bytes, Any] = {}  # l2 topic -> consumer.BookTracker (the book for the KV)
        self.latest: dict[bytes, bytes] = {}  # other conflatable kinds: topic -> latest payload
        self._pending: list[tuple[bytes, bytes]] = []
        self._last_ack: Any = None  # the publish_async future of the newest acked message (its PubAck: the stream seq)
        self._unacked = ACK_EVERY - 1  # plain publishes since the last acked one (the first message is acked)
        self._books: dict[str, Any] = {}  # unit (exchange, or NAME.K: pipeline/shards.py) -> shm BookReader
        self._rings: dict[str, Any] = {}  # unit -> TradeRingReader

    # ------------------------------------------------------------ NATS setup
    async def connect(self):
        import nats

        s = self.settings
        self.nc = await nats.connect(s.url, name="l2pipeline-bridge", max_reconnect_attempts=-1,
                                     error_cb=self._nats_error)
        self.js = self.nc.jetstream(domain=s.domain, publish_async_max_pending=ACKS_IN_FLIGHT)
        await self._ensure_stream()
        self.kv = await self._ensure_bucket()
        await self.nc.subscribe(natsbus.status_subject(s.prefix), cb=self._status_request)

    async def _status_request(self, msg) -> None:
        """`pipeline status --remote nats://...`: this host's clock, and its feeds when asked
        (pipeline/natsbus.py ``ask_status``); the host is named with the run_dir (two pipelines
        of one host answer apart)."""
        t_recv = time.time_ns()
        try:
            req = natsbus.decode_status_request(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.stats.errors += 1
            return
        status = None
        if req.kind == "status":
            from pipeline.status import feeds

            all_feeds, all_exchanges = [], []
            for name in self.exchanges:
                f, ex = feeds(self.config, only=name)
                all_feeds += f
                all_exchanges += ex
            status = {"feeds": all_feeds, "exchanges": all_exchanges,
                      "bridge": {**vars(self.stats), "stream": self.settings.stream}}
        if msg.reply:
            await self.nc.publish(msg.reply, natsbus.encode_status(natsbus.StatusReply(
                host=f"{socket.gethostname()}:{self.config.run_dir}", t_recv=t_recv, t_send=time.time_ns(),
                status=status)))

    async def _nats_error(self, exc: BaseException) -> None:
        self.stats.errors += 1
        log.warning("nats: %s", exc)

    async def _ensure_stream(self) -> None:
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        s = self.settings
        wanted = StreamConfig(name=s.stream, subjects=[f"{s.prefix}.>"], retention=RetentionPolicy.LIMITS,
                              max_age=s.max_age_s, max_bytes=s.max_bytes, storage=StorageType.FILE,
                              num_replicas=s.replicas, duplicate_window=s.duplicate_window_s)
        try:
            await self.js.stream_info(s.stream)
        except NotFoundError:
            await self.js.add_stream(wanted)
            return
        await self.js.update_stream(wanted)  # retention changed in the config: the stream follows

    async def _ensure_bucket(self):
        from nats.js.errors import BucketNotFoundError

        s = self.settings
        try:
            return await self.js.key_value(s.bucket)
        except BucketNotFoundError:
            from nats.js.api import KeyValueConfig

            return await self.js.create_key_value(KeyValueConfig(bucket=s.bucket, history=1,
                                                                 replicas=s.replicas))

    # ------------------------------------------------------------ the bus
    def _received(self, topic: bytes, payload: bytes) -> None:
        self._pending.append((topic, payload))

    async def _forward(self, topic: bytes, payload: bytes) -> None:
        msg = schema.decode(payload)
        kind = schema.kind_of(topic)
        st = self.streams.get(topic)
        if st is None:
            st = self.streams[topic] = _Stream()
        if st.epoch == msg.epoch and msg.seq <= st.seq:
            return  # already published (a refill or a snapshot of ours covered it)
        if kind is schema.L2:
            await self._track_book(topic, msg, st)  # type: ignore[arg-type]
            if st.epoch == msg.epoch and msg.seq <= st.seq:
                return  # the snapshot it just published from shared memory covers it
        elif kind is schema.TRADE and st.epoch == msg.epoch and msg.seq > st.seq + 1:
            await self._refill_trades(topic, msg, st)  # type: ignore[arg-type]
        elif kind.conflatable:
            self.latest[topic] = payload
        await self._publish(topic, payload, msg.seq, msg.epoch, st)

    async def _publish(self, topic: bytes, payload: bytes, seq: int, epoch: int, st: _Stream,
                       made_here: bool = False) -> None:
        subject, headers = natsbus.subject(self.settings.prefix, topic), natsbus.headers(topic, seq, epoch, made_here)
        if self._unacked < ACK_EVERY - 1:
            await self.nc.publish(subject, payload, headers=headers)
            self._unacked += 1
        else:
            self._last_ack = await self.js.publish_async(subject, payload, headers=headers)
            self._unacked = 0
        st.epoch, st.seq, st.changed = epoch, seq, True
        self.stats.published += 1

    async def _track_book(self, topic: bytes, msg: schema.L2Update, st: _Stream) -> None:
        from pipeline.consumer import Applied, BookTracker

        tr = self.trackers.get(topic)
        if tr is None:
            tr = self.trackers[topic] = BookTracker(msg.exchange, msg.symbol)
        if tr.apply(msg) is not Applied.RESYNC:
            return
        # a gap of the bridge's own (or its start): the book from shared memory, into the stream too
        snap = self._shm_book(msg)
        if snap is None:
            return  # shm not there or behind: the ingest's next snapshot message will do
        tr.apply(snap)
        tr.apply(msg)
        await self._publish(topic, schema.encode(snap), snap.seq, snap.epoch, st, made_here=True)
        self.stats.snapshots_made += 1

    def _shm_book(self, msg: schema.L2Update) -> schema.L2Update | None:
        from pipeline.errors import SharedMemoryError
        from pipeline.shm import BookReader

        unit = shards.unit_of(self.config, msg.exchange, msg.symbol)  # the symbol's ingest process's segment
        reader = self._books.get(unit)
        try:
            if reader is None or reader.epoch != msg.epoch:
                if reader is not None:
                    reader.close()
                reader = self._books[unit] = BookReader.open(self.config.shm_prefix, unit)
            s = reader.read(msg.symbol)
        except SharedMemoryError:
            return None
        if s.epoch != msg.epoch or s.seq < msg.seq - 1:
            return None
        return schema.L2Update(exchange=msg.exchange, symbol=msg.symbol, epoch=s.epoch, seq=s.seq,
                               ts_exchange=s.ts_exchange_us, ts_received=s.ts_received_us, snapshot=True,
                               state=s.state.name.lower(), update_id=s.update_id, depth=msg.depth,
                               bids=[(p, q) for p, q in s.bids.tolist()], asks=[(p, q) for p, q in s.asks.tolist()],
                               instrument=msg.instrument)

    async def _refill_trades(self, topic: bytes, t: schema.Trade, st: _Stream) -> None:
        from pipeline.errors import SharedMemoryError
        from pipeline.trade_ring import TradeRingReader

        first = st.seq + 1
        unit = shards.unit_of(self.config, t.exchange, t.symbol)
        ring = self._rings.get(unit)
        try:
            if ring is None or ring.epoch != t.epoch:
                if ring is not None:
                    ring.close()
                ring = self._rings[unit] = TradeRingReader.open(self.config.shm_prefix, unit)
            got = [(seq, kept) for seq, kept in ring.read_range(t.symbol, first, t.seq - 1) if kept is not None]
        except SharedMemoryError:
            got = []
        for seq, kept in got:
            kept.instrument = t.instrument
            await self._publish(topic, schema.encode(kept), seq, t.epoch, st)
        self.stats.trades_refilled += len(got)
        self.stats.trades_lost += t.seq - first - len(got)

    # ------------------------------------------------------------ the KV bucket
    async def write_kv(self, everything: bool = False) -> None:
        """The latest state of every stream that changed since the last write (``everything``: all).

        Each value names the stream sequence of the newest acked message (module docstring): the
        states are taken after every message read was published, so each includes every message
        of its own stream up to that sequence, and a consumer starting after it misses nothing.  Writing
        every state now and then (KV_REFRESH_S) keeps that sequence recent for quiet streams too,
        so a late joiner replays seconds of the stream, not hours.
        """
        if self._last_ack is None:
            return
        values = []
        for topic, st in self.streams.items():
            if not (st.changed or everything):
                continue
            tr = self.trackers.get(topic)
            if tr is not None:
                if not tr.synced:
                    continue
                b = tr.book
                bids, asks = b.top()
                payload = schema.encode(schema.L2Update(
                    exchange=b.exchange, symbol=b.symbol, epoch=b.epoch, seq=b.seq, ts_exchange=b.ts_exchange,
                    ts_received=b.ts_received, snapshot=True, state=b.state, update_id=b.update_id,
                    depth=b.depth, bids=bids, asks=asks, instrument=b.instrument))
            elif topic in self.latest:
                payload = self.latest[topic]
            else:
                continue
            st.changed = False
            values.append((topic, payload))
        if not values:
            return
        ack = self._last_ack  # taken with the states: nothing was published in between
        self._unacked = ACK_EVERY - 1  # the next message is acked: the next write names a recent sequence
        try:
            stream_seq = (await ack).seq
        except Exception as exc:  # noqa: BLE001 - that message did not reach the stream: next time
            self.stats.errors += 1
            log.warning("nats: a publish failed: %s", exc)
            for topic, _ in values:
                self.streams[topic].changed = True
            return
        await asyncio.gather(*(self.kv.put(natsbus.kv_key(topic), natsbus.encode_kv(
            natsbus.KvSnapshot(stream_seq=stream_seq, payload=payload))) for topic, payload in values))
        self.stats.kv_writes += len(values)

    # ------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event, ready=None) -> None:
        import zmq

        await self.connect()
        ctx = zmq.Context()
        reader = bus.Reader.for_config(ctx, self.config, self.exchanges)
        reader.on_kinds({k: self._received for k in schema.KINDS.values()})
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        fds = [int(s.getsockopt(zmq.FD)) for s in (reader.hot_sock, reader.l2_sock) if s is not None]
        for fd in fds:
            loop.add_reader(fd, wake.set)
        next_kv = time.monotonic() + self.settings.kv_interval_s
        next_refresh = time.monotonic() + KV_REFRESH_S
        next_stats = 0.0
        if ready is not None:
            ready()
        log.info("bridge nats: %s -> %s stream %s, KV %s", ", ".join(self.exchanges), self.settings.url,
                 self.settings.stream, self.settings.bucket)
        try:
            while not stop.is_set():
                while reader.read():
                    pending, self._pending = self._pending, []
                    for topic, payload in pending:
                        try:
                            await self._forward(topic, payload)
                        except (ValueError, KeyError, TypeError) as exc:  # a payload it cannot read
                            self.stats.errors += 1
                            log.warning("bridge: %s dropped: %s", topic[:80], exc)
                    if time.monotonic() >= next_kv:
                        break
                now = time.monotonic()
                if now >= next_kv:
                    refresh = now >= next_refresh
                    await self.write_kv(everything=refresh)
                    next_kv = now + self.settings.kv_interval_s
                    if refresh:
                        next_refresh = now + KV_REFRESH_S
                if now >= next_stats:
                    self._write_stats()
                    next_stats = now + STATS_EVERY_S
                if reader.pending():
                    continue
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), max(0.01, min(next_kv, next_stats) - time.monotonic()))
                except TimeoutError:
                    pass
        finally:
            for fd in fds:
                loop.remove_reader(fd)
            reader.close()
            ctx.term()
            try:
                await self.write_kv()
                await self.nc.flush()  # the plain publishes reached the server
                await self.js.publish_async_completed()
            except Exception:  # noqa: BLE001 - stopping: NATS may be gone
                pass
            await self.nc.close()
            for r in (*self._books.values(), *self._rings.values()):
                r.close()
            self._write_stats()

    def _write_stats(self) -> None:
        path = stats_path(self.config)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**vars(self.stats), "pid": os.getpid(), "url": self.settings.url,
                                   "stream": self.settings.stream, "bucket": self.settings.bucket}))
        os.replace(tmp, path)


def stats_path(config: Config):
    return config.run_dir / f"bridge-{NAME}.stats.json"


class _NatsBridge:
    """The plugin object of publisher.BRIDGES (the shape of a server: publisher/base.py)."""

    parse_config = staticmethod(parse_config)

    def run(self, config: Config) -> None:
        from pipeline.pidfile import PidFile

        settings = config.bridges.get(NAME)
        if settings is None:
            raise ConfigError(f"bridges.{NAME}", 'missing: add a [bridges.nats] table with url = "nats://HOST:4222"')
        config.run_dir.mkdir(parents=True, exist_ok=True)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await Bridge(config, settings).run(stop)

        with PidFile(config.run_dir / f"bridge-{NAME}.pid"):
            asyncio.run(main())

    def status(self, config: Config) -> dict[str, Any]:
        from pipeline.pidfile import pid_alive, read_pid

        pid = read_pid(config.run_dir / f"bridge-{NAME}.pid")
        try:
            stats = json.loads(stats_path(config).read_text())
        except (OSError, ValueError):
            stats = {}
        return {"name": NAME, "state": "running" if pid_alive(pid) else "stopped", "pid": pid,
                "url": config.bridges[NAME].url, **{k: v for k, v in stats.items() if k not in ("pid", "url")}}


BRIDGE = _NatsBridge()
