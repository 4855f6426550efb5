"""``GET /metrics``: Prometheus text format, from prometheus-client with a private registry.

Two histograms are observed on the way, one per bus message and one per frame written
to a client, so they are on the hot path: a plain ``Histogram`` of this module (a bisect
and two adds, no lock: everything runs on the event loop), exported at scrape time as
Prometheus histograms (prometheus-client's own Histogram takes a lock per bucket and
cost more than the rest of a trade's fan-out to a client):

    l2p_publisher_bus_latency_seconds{kind, exchange}   ingest receive -> publisher receive
    l2p_publisher_send_latency_seconds{kind}             ingest receive -> written to a client socket

Everything else is read when scraped (a custom collector): feed counters from shared
memory (the health check's last rows), the hub's counters and each client's queues.
Per-client series carry the client id; they disappear with the client.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

FEED_COUNTERS = ("updates", "trades", "gaps", "resyncs", "malformed", "checksum_ok", "checksum_failed")


class Histogram:
    """Counts per bucket (``le`` bounds, +Inf last), sum and count; not thread-safe (one loop)."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # first bound >= value: Prometheus' le
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs as Prometheus exposes them."""
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append((floatToGoString(bound), total))
        return out


class PublisherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._bus_children: dict[tuple[str, str], Histogram] = {}
        self._send_children = {k: Histogram() for k in ("trade", "l2")}
        self._hub_stats: Callable[[], dict] = dict
        self._feeds: Callable[[], list[dict]] = list
        self._book_resyncs: Callable[[], dict] = dict

    def bind(self, hub_stats: Callable[[], dict], feeds: Callable[[], list[dict]],
             book_resyncs: Callable[[], dict]) -> None:
        """Sources read at scrape time; registers the collector once."""
        self._hub_stats, self._feeds, self._book_resyncs = hub_stats, feeds, book_resyncs
        self.registry.register(_Collector(self))

    def bus_delay(self, kind: str, exchange: str, seconds: float) -> None:
        child = self._bus_children.get((kind, exchange))
        if child is None:
            child = self._bus_children[(kind, exchange)] = Histogram()
        child.observe(seconds)

    def send_delay(self, kind: str, seconds: float) -> None:
        child = self._send_children.get(kind)
        if child is not None:
            child.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, m: PublisherMetrics):
        self.m = m

    def describe(self):
        return []

    def collect(self):
        yield from self._feeds()
        yield from self._publisher()
        yield from self._histograms()

    def _histograms(self):
        bus = HistogramMetricFamily("l2p_publisher_bus_latency_seconds",
                                    "Ingest receive time to publisher receive time of bus messages.",
                                    labels=["kind", "exchange"])
        for (kind, exchange), h in self.m._bus_children.items():
            bus.add_metric([kind, exchange], h.buckets(), h.sum)
        send = HistogramMetricFamily("l2p_publisher_send_latency_seconds",
                                     "Ingest receive time to the frame written to a client's socket.", labels=["kind"])
        for kind, h in self.m._send_children.items():
            send.add_metric([kind], h.buckets(), h.sum)
        yield from (bus, send)

    def _feeds(self):
        labels = ["exchange", "symbol"]
        counters = {k: CounterMetricFamily(f"l2p_feed_{k}", f"Feed counter {k!r} (shared memory).", labels=labels)
                    for k in FEED_COUNTERS}
        live = GaugeMetricFamily("l2p_feed_live", "1 when the feed's book is live and its ingest beats.", labels=labels)
        age = GaugeMetricFamily("l2p_feed_age_seconds", "Seconds since the feed's last update or trade.", labels=labels)
        seq = GaugeMetricFamily("l2p_feed_seq", "L2 seq of the view in shared memory.", labels=labels)
        resync = CounterMetricFamily("l2p_publisher_book_resyncs", "Books the publisher (re)loaded from shared "
                                     "memory or a bus snapshot.", labels=labels)
        for f in self.m._feeds():
            lv = [f["exchange"], f["symbol"]]
            for k in FEED_COUNTERS:
                counters[k].add_metric(lv, f.get(k) or 0)
            live.add_metric(lv, 1.0 if f["state"] == "live" else 0.0)
            if f.get("age_s") is not None:
                age.add_metric(lv, f["age_s"])
            if f.get("seq") is not None:
                seq.add_metric(lv, f["seq"])
        for (ex, sym), n in self.m._book_resyncs().items():
            resync.add_metric([ex, sym], n)
        yield from counters.values()
        yield from (live, age, seq, resync)

    def _publisher(self):
        st = self.m._hub_stats()
        yield GaugeMetricFamily("l2p_publisher_clients", "Connected WebSocket clients.", value=st["clients"])
        yield CounterMetricFamily("l2p_publisher_connections", "WebSocket connections accepted.",
                                  value=st["connections_total"])
        disc = CounterMetricFamily("l2p_publisher_disconnects", "Client disconnects by reason.", labels=["reason"])
        for reason, n in st["disconnected"].items():
            disc.add_metric([reason], n)
        yield disc
        rej = CounterMetricFamily("l2p_publisher_rejected", "Upgrades refused by reason.", labels=["reason"])
        for reason, n in st["rejected"].items():
            rej.add_metric([reason], n)
        yield rej
        yield CounterMetricFamily("l2p_publisher_conflations", "Delta backlogs replaced by snapshots.",
                                  value=st["conflated"])
        yield CounterMetricFamily("l2p_publisher_dropped_deltas", "Deltas superseded by conflation snapshots.",
                                  value=st["dropped"])
        yield CounterMetricFamily("l2p_publisher_undelivered_trades",
                                  "Trades still queued when a slow client was closed.",
                                  value=st["undelivered_trades"])
        yield CounterMetricFamily("l2p_publisher_bad_requests", "Client requests answered with an error.",
                                  value=st["bad_requests"])
        yield CounterMetricFamily("l2p_publisher_trade_gaps", "Trade seq gaps seen on the bus.",
                                  value=st["trade_gaps"])
        msgs = CounterMetricFamily("l2p_publisher_bus_messages", "Bus messages received.", labels=["kind"])
        msgs.add_metric(["trade"], st["trades_in"])
        msgs.add_metric(["l2"], st["l2_in"])
        yield msgs
        sent = CounterMetricFamily("l2p_publisher_sent", "Frames written to clients.", labels=["kind"])
        for kind, n in st["sent"].items():
            sent.add_metric([kind], n)
        yield sent
        depth = GaugeMetricFamily("l2p_publisher_client_queue_depth", "Frames queued for a client, by lane.",
                                  labels=["client", "lane"])
        confl = CounterMetricFamily("l2p_publisher_client_conflations", "Conflations of one client.",
                                    labels=["client"])
        csent = CounterMetricFamily("l2p_publisher_client_sent", "Frames written to one client.", labels=["client"])
        for c in st["client_list"]:
            cid = str(c["id"])
            for lane, n in c["queues"].items():
                depth.add_metric([cid, lane], n)
            confl.add_metric([cid], c["conflated"])
            csent.add_metric([cid], c["sent"])
        yield from (depth, confl, csent)
