"""One ingest process: config -> adapter + books + bus + runner; clean up on exit."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import json
import os
import signal
import time
from pathlib import Path

import zmq

from ingest import adapters
from ingest.capture import CaptureWriter, raw_config, stats_file
from ingest.control import StreamControl
from ingest.feed import BusPublisher, FeedBooks
from ingest.runner import Runner
from pipeline import bus, curve, shards
from pipeline.config import Config, ExchangeConfig
from pipeline.errors import ConfigError, SharedMemoryError
from pipeline.streams import control_path, load_changes, process_symbols, state_path
from pipeline.pidfile import PidFile, pid_alive
from pipeline.snapshots import SnapshotService
from pipeline.shm import BookWriter
from pipeline.status import feeds
from pipeline.trade_ring import TradeRingReader, TradeRingWriter

log = logging.getLogger(__name__)


def create_adapter(whole: ExchangeConfig, ex: ExchangeConfig):
    """(config, adapter) of one ingest process.  One of N shards allows itself 1/N of the exchange's
    REST weight budget (configured or the adapter's default): a venue counts it per IP."""
    adapter = adapters.create(ex)  # an unknown name: ConfigError naming exchanges.NAME.adapter
    if whole.processes > 1:
        ex = dataclasses.replace(ex, rest_weight_limit=max(1, adapter.traits.rest_weight_limit // whole.processes))
        adapter = adapters.create(ex)
    return ex, adapter


async def _serve(config: Config, name: str, shard: int | None = None) -> None:
    whole = config.exchange(name)
    # one shard's config (its configured symbols, endpoints, unit name NAME.K: pipeline/shards.py),
    # or the exchange's when it has one process
    configured = shards.shard_config(whole, shard or 0)
    unit = configured.unit
    # runtime changes saved by earlier runs, on top of the config (pipeline/streams.py); a symbol
    # another shard owns now (the config changed since) is left to that shard
    symbols = process_symbols(whole, configured, load_changes(config.run_dir, unit))
    if len(symbols) > configured.slots:
        raise ConfigError(f"exchanges.{name}.max_symbols", f"{len(symbols)} symbols are followed (config plus runtime "
                          f"changes in {state_path(config.run_dir, unit)}), more than {configured.slots}")
    ex = dataclasses.replace(configured, symbols=symbols)
    ex, adapter = create_adapter(whole, ex)
    epoch = time.time_ns() // 1000
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    ctx = zmq.Context()
    trades_ep, l2_ep = bus.bind_endpoints(config, ex)
    trades_tcp, l2_tcp = bus.tcp_bind_endpoints(ex)
    snapshot_ep, snapshot_tcp = bus.snapshot_endpoints(config, ex)
    server_curve = curve.ServerCurve.from_config(ctx, config) if curve.tcp_endpoints(ex) else None
    secure = server_curve.apply if server_curve is not None else None
    writer = BookWriter(config.shm_prefix, ex.name, ex.symbols, ex.depth, epoch, capacity=configured.slots, unit=unit)
    trade_ring = None
    feed: FeedBooks | None = None
    trades_sock = l2_sock = None
    snapshots: SnapshotService | None = None
    capture = None  # [sinks.raw]: what the venue's connections carry (a node's files are on disk already)
    try:
        # (before the new ring replaces the one a crashed run left)
        previous, age_s = previous_trade_ids(config, unit) if adapter.traits.contiguous_trade_ids else ({}, None)
        trade_ring = TradeRingWriter(config.shm_prefix, ex.name, ex.symbols, ex.trade_ring_size, epoch,
                                     n_slots=configured.slots, unit=unit)
        trades_sock = bus.make_pub(ctx, trades_ep, trades_tcp, secure)
        l2_sock = bus.make_pub(ctx, l2_ep, l2_tcp, secure)
        snapshots = SnapshotService(ctx, config.shm_prefix, ex.name, ex.depth, snapshot_ep, snapshot_tcp, secure,
                                    unit=unit, status=lambda: _status(config, unit))
        snapshots.start(loop)
        # views and L2 messages go out once per event-loop turn (a batch of frames)
        feed = FeedBooks(ex.name, adapter, writer, BusPublisher(trades_sock, l2_sock, batch=True), epoch,
                         trade_ring=trade_ring, schedule_flush=lambda: loop.call_soon(feed.flush),
                         cvd=ex.cvd, bar_intervals=ex.bar_intervals, stale_after_s=ex.stale_after_s,
                         trade_backfill_max=ex.trade_backfill_max)
        if previous:
            feed.resume_trade_ids(previous, backfill=age_s is not None and age_s <= RESTART_BACKFILL_MAX_S)
            log.info("ingest %s: the previous run's last trade ids of %d symbols (%.0f s ago): a gap since is a "
                     "trade_gap%s", unit, len(previous), age_s or 0,
                     "" if age_s is not None and age_s <= RESTART_BACKFILL_MAX_S else " (too long ago to backfill)")
        if adapter.traits.transport == "files":  # a source that writes hourly files (ingest/filetail.py)
            from ingest.filetail import FileRunner
            runner = FileRunner(ex, adapter, feed, stop)
        else:
            capture = _capture_writer(config, ex)
            runner = Runner(ex, adapter, feed, stop, capture=capture)
        control = StreamControl(ex.name, configured.symbols, config.run_dir, feed, runner, unit=unit,
                                owns=lambda s: shards.owns(configured, whole, s))
        # The hot path makes no reference cycles; refcounting frees its garbage.  Fewer,
        # cheaper cyclic collections: move start-up objects out of the collector's
        # generations and collect the young generation less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        log.info("ingest %s (%s) epoch %d: %d symbols, depth %d, bus %s | %s, snapshots %s%s", unit, ex.adapter,
                 epoch, len(ex.symbols), ex.depth, ", ".join(filter(None, (trades_ep, trades_tcp))),
                 ", ".join(filter(None, (l2_ep, l2_tcp))), ", ".join(snapshots.endpoints),
                 " (tcp with CURVE)" if server_curve is not None else "")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(control.serve(control_path(config.run_dir, unit), stop), name="control")
            if previous:
                # a restart (the gap since the last run is reported on the bus): the sinks and consumers
                # of the last run reconnect first (ZeroMQ retries every 100 ms), or they would miss the
                # trade_gap marker that comes with the first trades
                await asyncio.sleep(RESTART_SETTLE_S)
            try:
                await runner.run()
            finally:
                stop.set()
    finally:
        # order: stop reading (done), flush the raw recording, close sockets with a short linger, term, unlink shm
        if capture is not None:
            capture.close()
        if snapshots is not None:
            snapshots.close()
        for sock in (trades_sock, l2_sock):
            if sock is not None:
                sock.close(linger=bus.LINGER_MS)
        if server_curve is not None:
            server_curve.stop()
        ctx.term()
        for ep in (trades_ep, l2_ep, snapshot_ep):
            bus.unlink_ipc(ep)
        if trade_ring is not None:
            if feed is not None and adapter.traits.contiguous_trade_ids:
                save_trade_ids(config.run_dir, unit, feed.trade_ids())  # the next run compares with them
            trade_ring.close(unlink=True)
        writer.close(unlink=True)
        log.info("ingest %s stopped", unit)


# A trade-id gap across an ingest restart is backfilled when the previous run ended at most this long ago
# (a crash restarted by supervisord, a redeploy); longer, it is reported only: hours-old trades are not
# what a live feed should publish now
RESTART_BACKFILL_MAX_S = 600.0
RESTART_SETTLE_S = 0.5  # after a restart, the subscribers' time to reconnect before the venue's first trades
RING_SCAN = 4096  # trades looked at, newest first, for a symbol's highest id in a crashed run's ring


def trade_ids_path(run_dir: Path, unit: str) -> Path:
    return run_dir / f"trade-ids-{unit}.json"


def save_trade_ids(run_dir: Path, unit: str, ids: dict[str, int]) -> None:
    """At a clean stop: each symbol's last trade id (venues with contiguous ids), for the next run."""
    path = trade_ids_path(run_dir, unit)
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"saved_us": time.time_ns() // 1000, "ids": ids}))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("ingest %s: could not save the last trade ids (%s): the next run starts afresh", unit, exc)


def previous_trade_ids(config: Config, unit: str) -> tuple[dict[str, int], float | None]:
    """The previous run's last trade id per symbol, and how long ago (s): after a crash from the trade
    ring it left in shared memory (every trade it published is there: its highest id among the newest
    RING_SCAN, as backfilled trades come after later live ones), after a clean stop from the file it saved.
    The file is used once.  ({}, None): nothing known (a first start, a reboot after a crash)."""
    ids: dict[str, int] = {}
    newest_us = 0
    try:
        ring = TradeRingReader.open(config.shm_prefix, unit)
    except (SharedMemoryError, OSError, ValueError):
        ring = None
    if ring is not None:
        try:
            if ring.pid == os.getpid() or not pid_alive(ring.pid):
                for sym in ring.symbols:
                    head = ring.head(sym)
                    for seq in range(head, max(ring.oldest(sym), head - RING_SCAN + 1) - 1, -1):
                        t = ring.read(sym, seq)
                        if t is not None and t.trade_id.isdigit():
                            ids[sym] = max(ids.get(sym, 0), int(t.trade_id))
                            newest_us = max(newest_us, t.ts_received)
        finally:
            ring.close()
    path = trade_ids_path(config.run_dir, unit)
    if not ids:
        try:
            data = json.loads(path.read_text())
            ids = {s: v for s, v in data["ids"].items() if isinstance(s, str) and type(v) is int and v > 0}
            newest_us = int(data["saved_us"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ids = {}
    path.unlink(missing_ok=True)
    return ids, ((time.time_ns() // 1000 - newest_us) / 1e6 if ids else None)


def _capture_writer(config: Config, ex) -> CaptureWriter | None:
    """The raw recorder of this ingest process when ``[sinks.raw]`` asks for it (ingest/capture.py),
    started; its files and stats are named by the process's unit (``NAME``, or ``NAME.K`` for a shard)."""
    settings = raw_config(config)
    if settings is None or (settings.exchanges and ex.name not in settings.exchanges):
        return None
    writer = CaptureWriter(settings, ex.unit, ex.adapter, stats_path=stats_file(config, ex.unit))
    writer.start()
    log.info("ingest %s: recording raw traffic into %s", ex.unit, settings.dir)
    return writer


def run_ingest(config: Config, name: str, shard: int | None = None) -> None:
    """Blocking entry point of ``pipeline ingest NAME [--shard K]``: the exchange's one ingest
    process, or shard K of an exchange with ``processes`` > 1 (pipeline/shards.py)."""
    whole = config.exchange(name)  # fail early on an unknown name
    if whole.processes > 1 and shard is None:
        raise ConfigError(f"exchanges.{name}.processes", f"{whole.processes} ingest processes: start each with "
                          f"`pipeline ingest {name} --shard K`, K in 0..{whole.processes - 1} (`pipeline run` does)")
    if whole.processes == 1 and shard not in (None, 0):
        raise ConfigError(f"exchanges.{name}.processes", f"one ingest process: no shard {shard}")
    ex = shards.shard_config(whole, shard or 0)
    curve.check_exposure(config, ex)  # ConfigError: a tcp endpoint beyond loopback without CURVE
    config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # ipc sockets, pid files: ours only
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with PidFile(config.run_dir / f"ingest-{ex.unit}.pid"):
        runner(_serve(config, name, shard))


__all__ = ["run_ingest"]


def _status(config: Config, exchange: str) -> dict:
    """This exchange's feeds and exchange entry, as `pipeline status` shows them (the snapshot
    service's answer to `pipeline status --remote`)."""
    f, ex = feeds(config, only=exchange)
    return {"feeds": f, "exchanges": ex}
