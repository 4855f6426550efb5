"""One ingest process: config -> adapter + books + bus + runner; clean up on exit."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
import time

import zmq

from ingest import adapters
from ingest.capture import CaptureWriter, raw_config, stats_file
from ingest.control import StreamControl
from ingest.feed import BusPublisher, FeedBooks
from ingest.runner import Runner
from pipeline import bus, curve, shards
from pipeline.config import Config, ExchangeConfig
from pipeline.errors import ConfigError
from pipeline.streams import control_path, load_changes, process_symbols, state_path
from pipeline.pidfile import PidFile
from pipeline.snapshots import SnapshotService
from pipeline.shm import BookWriter
from pipeline.status import feeds
from pipeline.trade_ring import TradeRingWriter

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
    trades_sock = l2_sock = None
    snapshots: SnapshotService | None = None
    capture = None  # [sinks.raw]: what the venue's connections carry (a node's files are on disk already)
    try:
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
            trade_ring.close(unlink=True)
        writer.close(unlink=True)
        log.info("ingest %s stopped", unit)


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
