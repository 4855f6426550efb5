"""The bus on ZeroMQ: endpoints and sockets, ``send`` / ``recv`` of one message, and the reader.

Per exchange two PUB sockets: the hot socket (trades, quotes, liquidations: the kinds of
``schema.Socket.HOT``) and L2 (books, derivative tickers, CVD, trade bars).  Each binds an ipc
endpoint in the run_dir (readers on this host); ``l2_endpoint`` / ``trades_endpoint`` in the
exchange's config add a tcp endpoint for consumers on other hosts, with CURVE when ``[bus]``
configures it (pipeline/curve.py; readers pass ``remote`` and ``curve``).  Topics and payloads are
pipeline/schema.py's; this module moves the two frames ``[topic, payload]`` (kvmsg style).

``Reader`` is the one way this project reads the bus (consumer, publisher, CSV sink,
benchmarks): a SUB socket for the hot kinds and one for L2, over any number of exchanges,
trades always first (DESIGN.md).  One ``read`` step, without blocking:

    1. every hot message that is waiting; if there was one, the step ends there, so the
       caller hands it on (the publisher yields to its loop, the consumer returns it);
    2. else up to ``max_l2`` L2 messages, draining the hot socket after every
       ``hot_check_every``-th and ending the step as soon as that drain found one.

A blocking caller waits with ``wait(timeout)`` and then repeats ``read``; an asyncio caller
(``start``) gets its callbacks from the loop, which runs one step per turn.  The hot
socket is probed with ZMQ_EVENTS, which costs about half of a ``recv(NOBLOCK)`` that
raises ``zmq.Again``; probing after every 4th L2 message rather than each cut the
publisher's CPU by 10% (py-spy) and delays a waiting trade by ~50 µs at most.

ZMQ_FD is edge-triggered: it signals a change, not a level.  An asyncio step ends by reading
ZMQ_EVENTS of both sockets, which re-arms the FD, and schedules another step when either
still has input, so no message waits for a signal that already came.

ZeroMQ subscriptions match topic prefixes: a subscription to ``trade.sim.BTCUSD`` also gets
``trade.sim.BTCUSDT``.  A reader given whole topics (``exact``) drops every other one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

import zmq

from pipeline import schema, shards
from pipeline.config import Config, ExchangeConfig

log = logging.getLogger(__name__)

SNDHWM = 200_000  # a slow subscriber loses messages past this; it sees a seq gap and resyncs
RCVHWM = 200_000
LINGER_MS = 200


def endpoint(config: Config, exchange: str | ExchangeConfig, socket: schema.Socket, remote: bool = False) -> str:
    """The endpoint of one of an exchange's bus sockets, as a subscriber connects to it (one ingest
    process: an exchange with ``processes`` > 1 has one per shard, ``exchange_endpoints``)."""
    trades, l2 = remote_endpoints(config, exchange) if remote else endpoints(config, exchange)
    return trades if socket is schema.Socket.HOT else l2


def exchange_endpoints(config: Config, exchange: str, socket: schema.Socket, remote: bool = False) -> list[str]:
    """Every endpoint of one of an exchange's bus sockets: one per ingest process (pipeline/shards.py);
    a SUB socket connected to all of them reads the whole exchange."""
    return [endpoint(config, sx, socket, remote) for sx in shards.shard_configs(config.exchange(exchange))]


def endpoints(config: Config, exchange: str | ExchangeConfig) -> tuple[str, str]:
    """(trades endpoint, l2 endpoint) of an exchange on this host: its ipc sockets (the ingest binds
    them whether or not tcp endpoints are configured too)."""
    ex = _one_process(config, exchange)
    return bind_endpoints(config, ex)


def _one_process(config: Config, exchange: str | ExchangeConfig) -> ExchangeConfig:
    """The config of one ingest process; ConfigError for a sharded exchange's name (which shard?)."""
    from pipeline.errors import ConfigError

    ex = config.exchange(exchange) if isinstance(exchange, str) else exchange
    if ex.processes > 1 and ex.shard is None:
        raise ConfigError(f"exchanges.{ex.name}.processes", f"{ex.processes} ingest processes: each has its own "
                          "endpoints (pipeline.shards.shard_configs, bus.exchange_endpoints)")
    return ex


def bind_endpoints(config: Config, ex: ExchangeConfig) -> tuple[str, str]:
    """(trades, l2) ipc endpoints the ingest binds: ``*_endpoint`` when it is an ipc path, else in run_dir."""
    trades = ex.trades_endpoint if _ipc(ex.trades_endpoint) else f"ipc://{config.run_dir}/{ex.unit}.trades.sock"
    l2 = ex.l2_endpoint if _ipc(ex.l2_endpoint) else f"ipc://{config.run_dir}/{ex.unit}.l2.sock"
    return trades, l2  # type: ignore[return-value]  # _ipc narrowed them


def tcp_bind_endpoints(ex: ExchangeConfig) -> tuple[str | None, str | None]:
    """(trades, l2) tcp endpoints the ingest binds besides the ipc ones (for other hosts), or None."""
    return (ex.trades_endpoint if _tcp(ex.trades_endpoint) else None,
            ex.l2_endpoint if _tcp(ex.l2_endpoint) else None)


def remote_endpoints(config: Config, exchange: str | ExchangeConfig) -> tuple[str, str]:
    """(trades, l2) tcp endpoints as a consumer on another host connects to them (its config names
    the ingest host's address).  ConfigError naming the key when the exchange has none."""
    from pipeline.errors import ConfigError

    ex = _one_process(config, exchange)
    out = []
    for key, ep in (("trades_endpoint", ex.trades_endpoint), ("l2_endpoint", ex.l2_endpoint)):
        if not _tcp(ep):
            raise ConfigError(f"exchanges.{ex.name}.{key}", "a tcp endpoint is needed to read this exchange from "
                                                           "another host (transport=\"tcp\")")
        out.append(_connectable(ep))  # type: ignore[arg-type]
    return out[0], out[1]


def snapshot_endpoints(config: Config, ex: ExchangeConfig) -> tuple[str, str | None]:
    """(ipc, tcp or None) endpoints of the exchange's snapshot service (ingest/snapshot_service.py)."""
    return f"ipc://{config.run_dir}/{ex.unit}.snapshot.sock", ex.snapshot_endpoint


def snapshot_endpoint(config: Config, exchange: str | ExchangeConfig, remote: bool = False) -> str:
    """The snapshot service's endpoint as a client connects to it (``remote``: over tcp)."""
    from pipeline.errors import ConfigError

    ex = _one_process(config, exchange)
    local, tcp = snapshot_endpoints(config, ex)
    if not remote:
        return local
    if tcp is None:
        raise ConfigError(f"exchanges.{ex.name}.snapshot_endpoint", "a tcp endpoint is needed to ask this "
                                                                   "exchange for snapshots from another host")
    return _connectable(tcp)


def _ipc(endpoint: str | None) -> bool:
    return endpoint is not None and endpoint.startswith("ipc://")


def _tcp(endpoint: str | None) -> bool:
    return endpoint is not None and endpoint.startswith("tcp://")


def _connectable(endpoint: str) -> str:
    # a publisher bound on tcp://0.0.0.0:P is reached on loopback locally
    return endpoint.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:").replace("tcp://*:", "tcp://127.0.0.1:")


def make_pub(ctx: zmq.Context, endpoint: str, tcp: str | None = None,
             curve: Callable[[zmq.Socket], None] | None = None, kind: int = zmq.PUB) -> zmq.Socket:
    """A bound PUB socket; a stale ipc file from a crashed process is replaced.

    ``tcp``: a second endpoint for other hosts, bound after ``curve(sock)`` has set the CURVE server
    options (pipeline/curve.py ``ServerCurve.apply``), so only that endpoint uses CURVE.
    """
    for ep in (endpoint, tcp):
        if ep is not None and ep.startswith("ipc://"):
            path = Path(ep[len("ipc://"):])
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    sock = ctx.socket(kind)
    if kind == zmq.PUB:
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.bind(endpoint)
    if tcp is not None:
        if curve is not None:
            curve(sock)
        sock.bind(tcp)
    return sock


def make_sub(ctx: zmq.Context, endpoints_: list[str], topics: list[bytes] | None = None,
             curve: Callable[[zmq.Socket], None] | None = None) -> zmq.Socket:
    """A SUB socket connected to ``endpoints_``, subscribed to topic prefixes (all if None).

    ``curve``: sets the client's CURVE options before it connects (pipeline/curve.py ``ClientKeys.apply``).
    """
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve(sock)
    for t in topics if topics is not None else [b""]:
        sock.setsockopt(zmq.SUBSCRIBE, t)
    for ep in endpoints_:
        sock.connect(ep)
    return sock


def unlink_ipc(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        try:
            os.unlink(endpoint[len("ipc://"):])
        except FileNotFoundError:
            pass


# ------------------------------------------------------------------ one message

# pyzmq's Socket.send (zmq/sugar/socket.py) adds only routing_id/group handling, for SERVER and
# RADIO sockets, to its backend's send; the bus sends bytes on PUB sockets, so it calls the
# backend's directly: 0.45 us per frame instead of 0.94-1.19 (pyzmq 27.3, back-to-back frames
# on an ipc PUB, this machine; the ingest sends two frames per message).
_ZmqSocket = zmq.backend.Socket
_send_frame = _ZmqSocket.send
_SNDMORE = zmq.SNDMORE


def send(sock: zmq.Socket, topic: bytes, payload: bytes) -> None:
    """Send one bus message: ``[topic, payload]`` (payload from ``schema.encode``)."""
    if isinstance(sock, _ZmqSocket):
        _send_frame(sock, topic, _SNDMORE)
        _send_frame(sock, payload)
    else:  # anything with zmq's send (tests' recorders)
        sock.send(topic, _SNDMORE)
        sock.send(payload)


def recv(sock: zmq.Socket, flags: int = 0) -> tuple[bytes, bytes]:
    """Receive one bus message as ``(topic, payload)``; ``zmq.NOBLOCK`` raises ``zmq.Again`` if none.

    The two frames of one message arrive together, so only the first can be missing.
    """
    topic = sock.recv(flags)
    return topic, sock.recv()


# ------------------------------------------------------------------ the reader

OnMessage = Callable[[bytes, bytes], None]  # (topic, payload)

L2_BATCH = 64  # L2 messages per read step before the caller (or the loop) gets a turn
HOT_CHECK_EVERY = 4  # the hot socket is drained after every 4th L2 message (module docstring)
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: the enum operators cost µs


class Reader:
    """Trades first: a SUB socket for the hot kinds and one for L2 (either may be absent).

    Args:
        ctx: the ZeroMQ context (a plain ``zmq.Context``, also under asyncio: see ``start``).
        hot_endpoints, l2_endpoints: PUB endpoints to connect to; empty: no such socket.
        hot_topics, l2_topics: subscription prefixes (None: everything).
        exact: whole topics to hand out; others are dropped (None: hand out all).
        hot_check_every: drain the hot socket after every N L2 messages (a power of two).
        curve: sets CURVE client options on both sockets before they connect (pipeline/curve.py).
    """

    def __init__(self, ctx: zmq.Context, hot_endpoints: list[str], l2_endpoints: list[str],
                 hot_topics: list[bytes] | None = None, l2_topics: list[bytes] | None = None,
                 exact: Iterable[bytes] | None = None, hot_check_every: int = HOT_CHECK_EVERY,
                 kinds: Iterable[schema.EventKind] | None = None,
                 curve: Callable[[zmq.Socket], None] | None = None):
        if hot_check_every < 1 or hot_check_every & (hot_check_every - 1):
            raise ValueError(f"hot_check_every must be a power of two, got {hot_check_every}")
        self.hot_sock = make_sub(ctx, hot_endpoints, hot_topics, curve) if hot_endpoints else None
        self.l2_sock = make_sub(ctx, l2_endpoints, l2_topics, curve) if l2_endpoints else None
        self._socks = tuple(sock for sock in (self.hot_sock, self.l2_sock) if sock is not None)
        self.endpoints = list(hot_endpoints) + list(l2_endpoints)
        self.exact = frozenset(exact) if exact is not None else None
        # the kinds the subscriptions let through (None: any registered kind)
        self.kinds = tuple(kinds) if kinds is not None else None
        self._mask = hot_check_every - 1
        self._poller: zmq.Poller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._fds: list[int] = []
        self._on_hot: OnMessage = _ignore
        self._on_l2: OnMessage = _ignore
        self._on_error: Callable[[BaseException], None] = _raise
        # asyncio: called around each read step on the loop (the publisher batches its socket writes
        # of a step: publisher/server.py); not around ``poll_hot``
        self.before_step: Callable[[], None] | None = None
        self.after_step: Callable[[], None] | None = None

    @classmethod
    def for_config(cls, ctx: zmq.Context, config: Config, exchanges: Iterable[str] | None = None,
                   symbols: Iterable[str] | None = None, hot: bool = True, l2: bool = True,
                   hot_check_every: int = HOT_CHECK_EVERY,
                   kinds: Iterable[schema.EventKind] | None = None, remote: bool = False,
                   curve: Callable[[zmq.Socket], None] | None = None) -> "Reader":
        """A reader of the configured exchanges' bus (all of them by default).

        ``remote``: connect to the tcp endpoints (another host) instead of the ipc ones, with
        ``curve`` setting the CURVE client options when the endpoints use CURVE.

        ``symbols``: only these whole symbols, on every chosen exchange (None: all).
        ``hot`` / ``l2``: whether to read the hot socket (trades) and the L2 socket.
        ``kinds``: subscribe to these kinds only (None: every registered kind), so a reader
        of trades and books is not sent quotes it would drop; a socket none of them uses
        is not opened.
        """
        names = list(exchanges) if exchanges is not None else list(config.exchanges)
        for name in names:
            config.exchange(name)  # an unknown name raises ConfigError here, not a silent empty reader
        syms = list(symbols) if symbols is not None else None
        wanted = list(kinds) if kinds is not None else list(schema.KINDS.values())
        hot_kinds = [k for k in wanted if k.socket is schema.Socket.HOT]
        l2_kinds = [k for k in wanted if k.socket is schema.Socket.L2]
        hot, l2 = hot and bool(hot_kinds), l2 and bool(l2_kinds)
        hot_eps = [e for n in names for e in exchange_endpoints(config, n, schema.Socket.HOT, remote)] if hot else []
        l2_eps = [e for n in names for e in exchange_endpoints(config, n, schema.Socket.L2, remote)] if l2 else []
        hot_topics = [t for k in hot_kinds for t in schema.topics(k, names, syms)]
        l2_topics = [t for k in l2_kinds for t in schema.topics(k, names, syms)]
        return cls(ctx, hot_eps, l2_eps, hot_topics, l2_topics,
                   exact=hot_topics + l2_topics if syms is not None else None, hot_check_every=hot_check_every,
                   kinds=wanted, curve=curve)

    # ------------------------------------------------------------ callbacks
    def on(self, on_hot: OnMessage | None = None, on_l2: OnMessage | None = None,
           on_error: Callable[[BaseException], None] | None = None) -> None:
        """Set the callbacks ``read`` hands messages to: ``on_hot(topic, payload)`` and ``on_l2``.

        ``on_error`` gets what stops an asyncio reader (a ZeroMQ error, or a callback's bug).
        """
        exact = self.exact
        if on_hot is not None:
            self._on_hot = on_hot if exact is None else _only(exact, on_hot)
        if on_l2 is not None:
            self._on_l2 = on_l2 if exact is None else _only(exact, on_l2)
        if on_error is not None:
            self._on_error = on_error

    def on_kinds(self, handlers: Mapping[schema.EventKind, OnMessage],
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        """Set a callback per event kind; each socket hands its messages to the kind's callback.

        A socket that carries one kind (of those the reader subscribed to) calls its callback
        directly; one that carries several looks the kind up by topic prefix.  Messages of a kind
        without a callback are dropped, so a reader written before a kind was added keeps working
        when it appears.
        """
        per_socket: dict[schema.Socket, OnMessage] = {}
        subscribed = self.kinds if self.kinds is not None else tuple(schema.KINDS.values())
        for socket in schema.Socket:
            carried = [k for k in subscribed if k.socket is socket]
            handled = {k: h for k, h in handlers.items() if k.socket is socket}
            if len(carried) == 1 and carried[0] in handled:
                per_socket[socket] = handled[carried[0]]
            elif handled:
                per_socket[socket] = _by_topic_prefix({k.subscription(): h for k, h in handled.items()})
        self.on(per_socket.get(schema.Socket.HOT, _ignore), per_socket.get(schema.Socket.L2, _ignore), on_error)

    def subscribe_l2(self, topic: bytes) -> None:
        """Add a subscription (a topic prefix) to the L2 socket; messages come once ZeroMQ has passed it
        to the publishers (asynchronously: a reader that needs everything after some point checks seqs)."""
        if self.l2_sock is not None:
            self.l2_sock.setsockopt(zmq.SUBSCRIBE, topic)

    def unsubscribe_l2(self, topic: bytes) -> None:
        """Remove one subscription of the L2 socket (ZeroMQ counts them: one per ``subscribe_l2``); messages
        already on their way still arrive."""
        if self.l2_sock is not None:
            self.l2_sock.setsockopt(zmq.UNSUBSCRIBE, topic)

    # ------------------------------------------------------------ reading
    def drain_hot(self) -> int:
        """Hand out every hot message waiting now; returns how many."""
        sock = self.hot_sock
        if sock is None:
            return 0
        on_hot, events, n = self._on_hot, sock.getsockopt, 0
        while events(_EVENTS) & _POLLIN:  # type: ignore[operator]  # an int for EVENTS
            topic = sock.recv()
            on_hot(topic, sock.recv())  # frames of one message arrive together
            n += 1
        return n

    def read(self, max_l2: int = L2_BATCH) -> int:
        """One step, without blocking (module docstring); returns the messages handed out."""
        n = self.drain_hot()
        l2 = self.l2_sock
        if n or l2 is None:
            return n
        on_l2, mask = self._on_l2, self._mask
        for i in range(max_l2):
            try:
                topic = l2.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            on_l2(topic, l2.recv())
            n += 1
            if i & mask == mask:
                hot = self.drain_hot()
                if hot:
                    return n + hot
        return n

    def drain(self, limit: int = 1_000_000) -> int:
        """Read what has arrived, up to ``limit`` messages (a stopping reader: then what the bus
        did not bring is taken from shared memory); returns the messages handed out."""
        n = 0
        while n < limit:
            got = self.read()
            if not got:
                break
            n += got
        return n

    def pending(self) -> bool:
        """Whether either socket has a message waiting (reading ZMQ_EVENTS re-arms ZMQ_FD).

        False only after both sockets were asked, so an asyncio reader that stops stepping on
        False has re-armed both file descriptors.
        """
        for sock in self._socks:
            if sock.getsockopt(_EVENTS) & _POLLIN:  # type: ignore[operator]  # an int for EVENTS
                return True
        return False

    def wait(self, timeout: float | None) -> bool:
        """Block until a message is waiting, or ``timeout`` seconds (None: forever); True if one is."""
        if self._poller is None:
            self._poller = zmq.Poller()
            for sock in (self.hot_sock, self.l2_sock):
                if sock is not None:
                    self._poller.register(sock, zmq.POLLIN)
        return bool(self._poller.poll(None if timeout is None else max(0, int(timeout * 1000))))

    # ------------------------------------------------------------ asyncio
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read from ``loop``: the callbacks run on it, one ``read`` step per turn.

        The sockets stay plain (not zmq.asyncio): the loop watches their ZMQ_FD, which works
        on any loop, uvloop included, and costs no future per message.
        """
        self._loop = loop
        for sock in (self.hot_sock, self.l2_sock):
            if sock is not None:
                fd = int(sock.getsockopt(zmq.FD))
                loop.add_reader(fd, self._schedule)
                self._fds.append(fd)
        self._schedule()
        log.info("bus: subscribed to %s", ", ".join(self.endpoints))

    def poll_hot(self) -> None:
        """Hand out the hot messages waiting now (asyncio: before L2 work of the caller's own)."""
        if self._loop is None:
            return
        try:
            self.drain_hot()
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ETERM:
                self._on_error(exc)

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._step)

    def _step(self) -> None:
        self._scheduled = False
        if self._loop is None:
            return
        try:
            if self.before_step is not None:
                self.before_step()
            try:
                self.read()
            finally:
                if self.after_step is not None:
                    self.after_step()
            if self.pending():
                self._schedule()
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ETERM:
                self._on_error(exc)
        except Exception as exc:  # a callback's bug: the owner stops (supervisord restarts it)
            self._on_error(exc)

    def close(self) -> None:
        """Stop reading (asyncio) and close the sockets."""
        if self._loop is not None:
            for fd in self._fds:
                self._loop.remove_reader(fd)
        self._loop = None
        self._fds.clear()
        for sock in (self.hot_sock, self.l2_sock):
            if sock is not None:
                sock.close(linger=0)


def _by_topic_prefix(table: dict[bytes, OnMessage]) -> OnMessage:
    def dispatch(topic: bytes, payload: bytes) -> None:
        handler = table.get(topic[:topic.find(b".") + 1])  # b"trade." of b"trade.sim.BTCUSDT"
        if handler is not None:
            handler(topic, payload)
    return dispatch


def _only(exact: frozenset[bytes], callback: OnMessage) -> OnMessage:
    def filtered(topic: bytes, payload: bytes) -> None:
        if topic in exact:
            callback(topic, payload)
    return filtered


def _ignore(topic: bytes, payload: bytes) -> None:
    pass


def _raise(exc: BaseException) -> None:
    raise exc
