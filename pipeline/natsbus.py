"""The bus on NATS JetStream: subjects, headers, KV keys and values, and the consumer's feed.

The NATS bridge (publisher/nats_bridge.py, `pipeline bridge nats`) reads the bus on the ingest's
host and publishes every message of every kind (the kind registry, pipeline/schema.py) to a
JetStream stream; the consumer library reads it back on any host with ``Consumer(config,
transport="nats")``.  This module is what both sides agree on:

    subject   PREFIX.KIND.EXCHANGE.SYMBOL     (PREFIX: [bridges.nats] prefix, "l2p" by default;
                                               KIND.EXCHANGE.SYMBOL: the bus topic)
    payload   the bus payload, unchanged (msgpack map, docs/bus.md)
    headers   L2p-Seq, L2p-Epoch              the payload's seq and epoch (read without decoding)
              Nats-Msg-Id  TOPIC:EPOCH:SEQ    JetStream drops a second copy within the stream's
                                              duplicate window (a restarted or second bridge);
                                              a snapshot the bridge makes itself ends in ":s"

    KV bucket (the Clone pattern's snapshot store, across sites): one key per stream of a kind
    that has a state, ``KIND.EXCHANGE.SYMBOL`` (characters NATS keys do not allow escaped as
    "=HH"): for ``l2`` the book as an L2 snapshot payload, for the other conflatable kinds their
    latest message; the value is ``KvSnapshot``: the payload and ``stream_seq``, the stream
    sequence of the last message that snapshot includes.

A consumer reads the KV snapshots it wants, then the stream from the smallest ``stream_seq`` + 1
(an ordered consumer: JetStream redelivers from where it was if a message is missed), drops what
each book already has (seq), and on a gap or a new epoch takes that book's KV snapshot again or
the next snapshot in the stream (the bridge publishes one whenever it resyncs a book itself).

nats-py is asyncio; ``NatsFeed`` runs its client on a thread of its own and hands messages to
the consumer through a queue, so the blocking ``Consumer`` and ``AsyncConsumer`` use it alike.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
from typing import Callable, Iterable

import msgspec

from pipeline import schema

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "l2p"
DEFAULT_STREAM = "L2P"
DEFAULT_BUCKET = "l2p_snapshots"
SEQ_HEADER = "L2p-Seq"
EPOCH_HEADER = "L2p-Epoch"
MSG_ID_HEADER = "Nats-Msg-Id"
CATCH_UP_BATCH = 500  # messages per fetch when a book is brought from its KV state up to now
CATCH_UP_MAX = 50_000  # further behind than this: wait for the next snapshot in the stream instead
CATCH_UP_IDLE_S = 10.0  # the server deletes a catch-up consumer this long unused


class KvSnapshot(msgspec.Struct, kw_only=True):
    stream_seq: int  # stream sequence of the last message this snapshot includes (0: none yet)
    payload: bytes   # the bus payload: an L2 snapshot, or a conflatable kind's latest message


_kv_encode = msgspec.msgpack.Encoder().encode
_kv_decode = msgspec.msgpack.Decoder(KvSnapshot).decode


def encode_kv(snapshot: KvSnapshot) -> bytes:
    return _kv_encode(snapshot)


def decode_kv(value: bytes) -> KvSnapshot:
    return _kv_decode(value)


def subject(prefix: str, topic: bytes) -> str:
    """``PREFIX.KIND.EXCHANGE.SYMBOL`` of a bus topic."""
    return f"{prefix}.{topic.decode('ascii')}"


def topic_of(prefix: str, subject_: str) -> bytes:
    return subject_[len(prefix) + 1:].encode("ascii")


def headers(topic: bytes, seq: int, epoch: int, made_here: bool = False) -> dict[str, str]:
    """The headers of one stream message (module docstring)."""
    msg_id = f"{topic.decode('ascii')}:{epoch}:{seq}" + (":s" if made_here else "")
    return {SEQ_HEADER: str(seq), EPOCH_HEADER: str(epoch), MSG_ID_HEADER: msg_id}


_KEY_OK = re.compile(r"[-/_.a-zA-Z0-9]")


def kv_key(topic: bytes) -> str:
    """The KV key of a stream: its topic, with characters NATS keys do not allow as ``=HH``."""
    return "".join(c if _KEY_OK.fullmatch(c) else "".join(f"={b:02X}" for b in c.encode()) for c in topic.decode())


def kv_topic(key: str) -> bytes:
    """The topic of a KV key (``kv_key`` reversed)."""
    return re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), key.encode("ascii"))


def kept_kinds() -> list[schema.EventKind]:
    """The kinds whose latest state the KV bucket keeps: the conflatable ones (books, and any later
    kind whose latest value is what a late joiner needs)."""
    return [k for k in schema.KINDS.values() if k.conflatable]


# ------------------------------------------------------------------ the consumer's side

class NatsFeed:
    """A NATS client on its own thread: KV snapshots first, then the stream (module docstring).

    ``messages`` gets ``(topic, payload)`` of every wanted stream message, KV snapshots first;
    ``wakeup()`` is called after each batch put there (the consumer's loop waits on it).
    """

    def __init__(self, url: str, prefix: str, stream: str, bucket: str, wanted: Callable[[bytes], bool],
                 wakeup: Callable[[], None] = lambda: None, timeout: float = 5.0, domain: str | None = None):
        self.url, self.prefix, self.stream, self.bucket, self.domain = url, prefix, stream, bucket, domain
        self.wanted, self.wakeup, self.timeout = wanted, wakeup, timeout
        self.messages: queue.SimpleQueue[tuple[bytes, bytes]] = queue.SimpleQueue()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nats-feed", daemon=True)
        self._thread.start()
        self._nc = self._js = self._kv = self._sub = None
        self.error: BaseException | None = None
        try:
            self._call(self._start())
        except BaseException:
            self.close()
            raise

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout or self.timeout + 1)

    async def _start(self) -> None:
        import nats
        from nats.js.api import ConsumerConfig, DeliverPolicy

        self._nc = await nats.connect(self.url, name="l2pipeline-consumer", connect_timeout=self.timeout,
                                      max_reconnect_attempts=-1, error_cb=self._error)
        js = self._nc.jetstream(timeout=self.timeout, domain=self.domain)
        self._js = js
        self._kv = await js.key_value(self.bucket)
        starts = []
        for topic, snap in await self._snapshots():
            self.messages.put((topic, snap.payload))
            starts.append(snap.stream_seq)
        if starts:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=min(starts) + 1)
        else:  # no snapshot stored yet: the live stream; books sync from its next snapshot
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        self._sub = await js.subscribe(f"{self.prefix}.>", stream=self.stream, ordered_consumer=True,
                                       config=config, cb=self._received)
        self.wakeup()

    async def _snapshots(self) -> list[tuple[bytes, KvSnapshot]]:
        from nats.js.errors import NoKeysError

        try:
            keys = await self._kv.keys()  # type: ignore[union-attr]
        except NoKeysError:
            return []
        out = []
        for key in keys:
            topic = kv_topic(key)
            if not self.wanted(topic):
                continue
            entry = await self._kv.get(key)  # type: ignore[union-attr]
            if entry.value:
                out.append((topic, decode_kv(entry.value)))
        return out

    async def _received(self, msg) -> None:
        topic = topic_of(self.prefix, msg.subject)
        if self.wanted(topic):
            self.messages.put((topic, msg.data))
            self.wakeup()

    async def _error(self, exc: BaseException) -> None:
        log.warning("nats: %s", exc)

    def catch_up(self, topic: bytes) -> list[bytes]:
        """One stream brought up to now (blocking): its KV snapshot payload, then every message of
        its subject the stream holds after the snapshot's ``stream_seq`` (the Clone pattern's
        snapshot + updates by seq).  [] when the bucket has no state for it yet, or NATS fails:
        the consumer asks again later, or takes the next snapshot in the stream.

        The KV state is written once per ``kv_interval_s``, so on a busy book it is up to that
        much behind the live message that showed a gap: the messages in between are read from
        the stream by an ephemeral pull consumer filtered on the subject (deleted after use,
        and by the server after CATCH_UP_IDLE_S should this client vanish), at most CATCH_UP_MAX.
        """
        async def get() -> list[bytes]:
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
            from nats.js.errors import KeyNotFoundError

            try:
                entry = await self._kv.get(kv_key(topic))  # type: ignore[union-attr]
            except KeyNotFoundError:
                return []
            if not entry.value:
                return []
            snap = decode_kv(entry.value)
            out = [snap.payload]
            config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=snap.stream_seq + 1,
                                    ack_policy=AckPolicy.NONE, inactive_threshold=CATCH_UP_IDLE_S)
            sub = await self._js.pull_subscribe(subject(self.prefix, topic), stream=self.stream,  # type: ignore[union-attr]
                                                config=config)
            try:
                while len(out) <= CATCH_UP_MAX:
                    try:
                        msgs = await sub.fetch(CATCH_UP_BATCH, timeout=self.timeout)
                    except asyncio.TimeoutError:
                        break  # nothing after the snapshot (or no more)
                    out.extend(m.data for m in msgs)
                    if not msgs or msgs[-1].metadata.num_pending == 0:
                        break
                else:
                    log.warning("nats: %s is more than %d messages past its KV state", topic.decode(), CATCH_UP_MAX)
                    return []
            finally:
                try:
                    await sub.unsubscribe()
                    await self._js.delete_consumer(self.stream, sub._consumer)  # type: ignore[union-attr]
                except Exception:  # noqa: BLE001 - the server drops it after CATCH_UP_IDLE_S anyway
                    pass
            return out
        try:
            return self._call(get(), self.timeout * 3)
        except Exception as exc:  # noqa: BLE001 - NATS down: the next snapshot in the stream will do
            log.warning("nats: no KV snapshot of %s: %s", topic.decode(), exc)
            return []

    def close(self) -> None:
        async def stop():
            if self._sub is not None:
                try:
                    await self._sub.unsubscribe()
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
            if self._nc is not None:
                await self._nc.close()
        if self._thread.is_alive():
            try:
                self._call(stop(), 5)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        self.loop.close()


def wanted_topics(exchanges: Iterable[str], symbols: Iterable[str] | None, kinds: Iterable[schema.EventKind]
                  ) -> Callable[[bytes], bool]:
    """The filter of a consumer: whole topics (symbols given) or per-exchange prefixes."""
    kinds = list(kinds)
    exchanges = list(exchanges)
    if symbols is not None:
        exact_topics = frozenset(t for k in kinds for t in schema.topics(k, exchanges, list(symbols)))
        return exact_topics.__contains__
    prefixes = tuple(t for k in kinds for t in schema.topics(k, exchanges, None))
    return lambda topic: topic.startswith(prefixes)


def settings(config) -> tuple[str, str, str, str, str | None]:
    """(url, prefix, stream, bucket, domain) of ``[bridges.nats]``: the bridge's parsed settings, or the raw
    table of a config loaded by the core alone (a consumer's host)."""
    from pipeline.errors import ConfigError

    table = config.bridges.get("nats")
    if table is None:
        raise ConfigError("bridges.nats", 'missing: a consumer with transport="nats" needs [bridges.nats] url')
    get = table.get if isinstance(table, dict) else lambda key, default=None: getattr(table, key, default)
    url = get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError("bridges.nats.url", 'missing: the NATS server, e.g. "nats://127.0.0.1:4222"')
    return (url, get("prefix", DEFAULT_PREFIX), get("stream", DEFAULT_STREAM), get("bucket", DEFAULT_BUCKET),
            get("domain", None))


OnMessage = Callable[[bytes, bytes], None]


class NatsReader:
    """The consumer's reader over NATS, with the shape of ``pipeline.bus.Reader`` the consumer uses
    (``on_kinds``, ``on``, ``wait``, ``read``, ``start``, ``close``), so the consumer's book and trade
    logic is the same on both transports.  Messages come in stream order (a KV snapshot first)."""

    def __init__(self, config, exchanges: Iterable[str], symbols: Iterable[str] | None,
                 kinds: Iterable[schema.EventKind], timeout: float = 5.0):
        url, self.prefix, stream, bucket, domain = settings(config)
        self._signal = threading.Event()
        self._handlers: dict[str, OnMessage] = {}
        self._on_error: Callable[[BaseException], None] = _raise
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = threading.Lock()
        self.feed = NatsFeed(url, self.prefix, stream, bucket, wanted_topics(exchanges, symbols, kinds),
                             self._wakeup, timeout, domain)
        self.endpoints = [url]

    def on_kinds(self, handlers, on_error=None) -> None:
        self._handlers = {k.topic_prefix: h for k, h in handlers.items()}
        if on_error is not None:
            self._on_error = on_error

    def on(self, on_hot=None, on_l2=None, on_error=None) -> None:
        if on_error is not None:
            self._on_error = on_error

    def _wakeup(self) -> None:
        self._signal.set()
        loop = self._loop
        if loop is not None and self._scheduled.acquire(blocking=False):
            loop.call_soon_threadsafe(self._step)

    def read(self, max_l2: int = 256) -> int:
        """Hand out up to ``max_l2`` waiting messages; returns how many."""
        messages, handlers, n = self.feed.messages, self._handlers, 0
        while n < max_l2:
            try:
                topic, payload = messages.get_nowait()
            except queue.Empty:
                break
            handler = handlers.get(topic[:topic.find(b".")].decode("ascii"))
            if handler is not None:
                handler(topic, payload)
            n += 1
        return n

    def pending(self) -> bool:
        return not self.feed.messages.empty()

    def wait(self, timeout: float | None) -> bool:
        if self.pending():
            return True
        self._signal.clear()
        if self.pending():
            return True
        return self._signal.wait(timeout)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._scheduled.acquire(blocking=False)
        loop.call_soon(self._step)

    def _step(self) -> None:
        try:
            self._scheduled.release()
        except RuntimeError:
            pass
        try:
            self.read()
        except Exception as exc:  # a callback's bug: the consumer raises it
            self._on_error(exc)
        if self.pending() and self._loop is not None and self._scheduled.acquire(blocking=False):
            self._loop.call_soon(self._step)

    def catch_up(self, topic: bytes) -> list[bytes]:
        return self.feed.catch_up(topic)

    def close(self) -> None:
        self._loop = None
        self.feed.close()


def _raise(exc: BaseException) -> None:
    raise exc


# ------------------------------------------------------------------ status across sites

def status_subject(prefix: str) -> str:
    """Where the bridges of ``prefix`` answer status and clock requests (`pipeline status --remote
    nats://...`); outside ``PREFIX.>`` so the stream does not store them."""
    return f"_l2p_status.{prefix}"


class StatusRequest(msgspec.Struct, kw_only=True):
    kind: str  # "clock": times only; "status": the bridge host's feeds and exchanges too


class StatusReply(msgspec.Struct, kw_only=True):
    host: str
    t_recv: int  # ns since the epoch, the bridge host's clock: the request read
    t_send: int  # the reply made
    status: dict | None = None  # {"feeds", "exchanges", "bridge"}


_status_req_encode = msgspec.msgpack.Encoder().encode
_status_req_decode = msgspec.msgpack.Decoder(StatusRequest).decode
_status_reply_decode = msgspec.msgpack.Decoder(StatusReply).decode


def encode_status(obj: StatusRequest | StatusReply) -> bytes:
    return _status_req_encode(obj)


def decode_status_request(data: bytes) -> StatusRequest:
    return _status_req_decode(data)


def ask_status(url: str, prefix: str, timeout: float, probes: int = 8, gather_s: float = 0.5) -> list[dict]:
    """Every bridge of ``prefix`` reachable through the NATS server at ``url`` (one per host or
    site): ``{"host", "clock": ClockOffset, "status": {...}}``, as the snapshot service's clock and
    status requests (pipeline/snapshots.py) but through NATS request/reply, so it works wherever
    a consumer can read the stream (leaf nodes forward it).  Bridges are found by the first
    request: whoever answers within ``timeout`` (then ``gather_s`` more for the others); the
    clock is the best of ``probes`` round trips per bridge.  [] when none answers."""
    import time

    from pipeline.snapshots import ClockOffset

    async def run() -> list[dict]:
        import nats

        nc = await nats.connect(url, name="l2pipeline-status", connect_timeout=timeout, max_reconnect_attempts=0,
                                allow_reconnect=False)
        try:
            inbox = nc.new_inbox()
            replies: asyncio.Queue = asyncio.Queue()

            async def got(msg) -> None:
                replies.put_nowait((time.time_ns(), _status_reply_decode(msg.data)))
            sub = await nc.subscribe(inbox, cb=got)
            subject = status_subject(prefix)

            async def round_trip(kind: str, hosts: set[str] | None) -> dict[str, tuple[int, int, StatusReply]]:
                while not replies.empty():
                    replies.get_nowait()  # late answers of the previous round
                t0 = time.time_ns()
                await nc.publish(subject, _status_req_encode(StatusRequest(kind=kind)), reply=inbox)
                await nc.flush()
                out: dict[str, tuple[int, int, StatusReply]] = {}
                deadline = asyncio.get_running_loop().time() + timeout
                while hosts is None or not hosts <= out.keys():
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    try:
                        t3, reply = await asyncio.wait_for(replies.get(), left)
                    except asyncio.TimeoutError:
                        break
                    out[reply.host] = (t0, t3, reply)
                    if hosts is None:  # the first round: the others get gather_s more
                        deadline = min(deadline, asyncio.get_running_loop().time() + gather_s)
                return out

            first = await round_trip("status", None)
            found: dict[str, dict] = {}
            for host, (t0, t3, r) in first.items():
                found[host] = {"host": host, "status": r.status, "time": r.t_send,
                               "clock": ClockOffset.from_times(t0, r.t_recv, r.t_send, t3)}
            for _ in range(probes - 1):
                if not found:
                    break
                for host, (t0, t3, r) in (await round_trip("clock", set(found))).items():
                    if host in found:
                        c = ClockOffset.from_times(t0, r.t_recv, r.t_send, t3)
                        if c.rtt_ns < found[host]["clock"].rtt_ns:
                            found[host]["clock"] = c
            await sub.unsubscribe()
            return [found[h] for h in sorted(found)]
        finally:
            await nc.close()
    return asyncio.run(run())
