"""The publisher's bus input: SUB to every exchange's trades and L2 sockets, trades always first.

Two SUB sockets (one connected to every trades endpoint, one to every L2 endpoint),
read without blocking from the event loop: ``loop.add_reader`` on their ZMQ_FD, then
drain.  Order inside one pump (DESIGN.md: trades never wait behind L2):

    1. every trade that is waiting;
    2. L2 messages one at a time, checking for trades after every fourth;
    3. as soon as a trade was handed out, or after L2_BATCH L2 messages, yield to the
       loop (call_soon) so the client senders woken meanwhile run first.

Work on L2 done outside the pump (a client's snapshot, rendered when its sender is ready)
calls ``poll_trades`` first, so a trade never waits behind it either.

ZMQ_FD is edge-triggered: it signals a change, not a level.  A pump ends by reading
ZMQ_EVENTS of both sockets, which re-arms the FD, and pumps again when either still
has input, so no message is left waiting for a signal that already came.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import zmq

from pipeline import bus
from pipeline.config import Config

log = logging.getLogger(__name__)

L2_BATCH = 64  # L2 messages per pump before the loop gets a turn
# Trades are checked for after every 4th L2 message: ZMQ_EVENTS costs ~3 µs here, about a
# fifth of handling one L2 message, so checking after each was 10% of the publisher's CPU
# (py-spy); four L2 messages delay a waiting trade by ~50 µs at most.
TRADE_CHECK_MASK = 3
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: the enum operators cost µs


class BusReader:
    def __init__(self, ctx: zmq.Context, config: Config, on_trade: Callable[[bytes], None],
                 on_l2: Callable[[bytes, bytes], None], on_error: Callable[[BaseException], None]):
        trades, l2 = [], []
        for name in config.exchanges:
            t, l = bus.endpoints(config, name)
            trades.append(t)
            l2.append(l)
        self.trades_sock = bus.make_sub(ctx, trades)
        self.l2_sock = bus.make_sub(ctx, l2)
        self.on_trade = on_trade
        self.on_l2 = on_l2
        self.on_error = on_error
        self.endpoints = trades + l2
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._fds: list[int] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for sock in (self.trades_sock, self.l2_sock):
            fd = sock.getsockopt(zmq.FD)
            loop.add_reader(fd, self._schedule)
            self._fds.append(fd)
        self._schedule()
        log.info("bus: subscribed to %s", ", ".join(self.endpoints))

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._pump)

    def _drain_trades(self) -> int:
        # Called before every L2 message, so the empty case must be cheap: ZMQ_EVENTS costs
        # about half of a recv(NOBLOCK) that raises zmq.Again.
        sock, on_trade, n = self.trades_sock, self.on_trade, 0
        events = sock.getsockopt
        while events(_EVENTS) & _POLLIN:
            sock.recv()  # topic: the payload names exchange and symbol
            on_trade(sock.recv())  # frames of one message arrive together
            n += 1
        return n

    def poll_trades(self) -> None:
        """Hand out the trades waiting on the bus now (the hub calls it before L2 work of its own)."""
        if self._loop is None:
            return
        try:
            self._drain_trades()
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ETERM:
                self.on_error(exc)

    def _pump(self) -> None:
        self._scheduled = False
        try:
            if self._drain_trades():
                self._schedule()
                return
            l2, on_l2 = self.l2_sock, self.on_l2
            for i in range(L2_BATCH):
                try:
                    topic = l2.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                on_l2(topic, l2.recv())
                if i & TRADE_CHECK_MASK == TRADE_CHECK_MASK and self._drain_trades():
                    break
            else:
                self._schedule()
                return
            if (self.trades_sock.getsockopt(zmq.EVENTS) | l2.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                self._schedule()
        except zmq.ZMQError as exc:
            if exc.errno != zmq.ETERM:
                self.on_error(exc)
        except Exception as exc:  # a bug: stop the process (supervisord restarts it)
            self.on_error(exc)

    def close(self) -> None:
        if self._loop is not None:
            for fd in self._fds:
                self._loop.remove_reader(fd)
        self._loop = None
        for sock in (self.trades_sock, self.l2_sock):
            sock.close(linger=0)
