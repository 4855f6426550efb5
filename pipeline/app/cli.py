"""The `pipeline` command: one click group; each command calls the modules that do the work."""

from __future__ import annotations

import json
import logging
import sys

import click

from ingest.adapters import names as adapter_names
from pipeline.config import SIM_PROTOCOLS, Config, load_config
from pipeline.errors import ConfigError, SharedMemoryError

pass_config = click.make_pass_decorator(Config)


# `pipeline bench SUBCOMMAND`: every benchmark lives in pipeline/benchmarks/, imported only when used (the
# benchmarks pull in more than the daemons need). A module exposes a click command named `command`, or an
# argparse `main(argv)` whose arguments are passed through untouched (its own --help included).
BENCH_COMMANDS = {
    "ingest": "pipeline.benchmarks.ingest",
    "gen-capture": "pipeline.benchmarks.gen_capture",
    "compare": "pipeline.benchmarks.compare",
    "e2e": "pipeline.benchmarks.e2e",
    "live-ingest": "pipeline.benchmarks.live_ingest",
    "csv-sink": "pipeline.benchmarks.csv_sink",
    "csv-offline": "pipeline.benchmarks.csv_offline",
    "publisher-latency": "pipeline.benchmarks.publisher_latency",
    "ws-loadtest": "pipeline.benchmarks.ws_loadtest",
    "bus-read": "pipeline.benchmarks.bus_read",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        import importlib.util

        return sorted(name for name, module in BENCH_COMMANDS.items() if importlib.util.find_spec(module))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = BENCH_COMMANDS.get(name)
        if module_name is None:
            return None
        import importlib

        module = importlib.import_module(module_name)
        if hasattr(module, "command"):
            return module.command
        return click.Command(
            name, help=(module.__doc__ or "").split("\n\n")[0], callback=lambda args: module.main(list(args)),
            params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
            context_settings={"ignore_unknown_options": True, "help_option_names": []})


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              envvar="PIPELINE_CONFIG", help="Pipeline TOML config (default: the built-in demo config).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Level-2 order-book market-data pipeline."""
    try:
        config = load_config(config_path, adapters=adapter_names())
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        ctx.exit(2)
    ctx.obj = config
    ctx.meta["config_path"] = config_path
    _setup_logging(config.log_level)


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the whole pipeline under supervisord in the foreground (Ctrl-C stops it)."""
    from pipeline.app import supervise

    ctx.exit(supervise.run(ctx.obj, ctx.meta["config_path"]))


@cli.command()
@click.argument("name")
@pass_config
def ingest(config: Config, name: str) -> None:
    """Run the ingest process of exchange NAME (as configured under [exchanges.NAME])."""
    try:
        config.exchange(name)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    from ingest.main import run_ingest

    try:
        run_ingest(config, name)
    except SharedMemoryError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option("--host", default=None, help="Address to bind (default: [publisher] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="WebSocket and HTTP port (default: [publisher] port, 9001; 0: any free port).")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
              help="Write the bound port into this file once listening.")
@pass_config
def publish(config: Config, host: str | None, port: int | None, ready_file: str | None) -> None:
    """Run the WebSocket publisher: every trade and book on one port, with a live page at /."""
    from publisher.main import run_publisher

    try:
        run_publisher(config, host, port, ready_file)
    except ConfigError as exc:  # a bad L2_THROTTLE_<NAME>_MS in the environment
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host or config.publisher.host}:"
                                   f"{config.publisher.port if port is None else port}: {exc.strerror or exc}") from None


@cli.command()
@click.option("--host", default=None, help="Address to bind (default: [sim] host or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port for WebSocket and REST (default: [sim] port, 9100).")
@click.option("--symbols", default=None, help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT.")
@click.option("--seed", type=int, default=None, help="Random seed: same seed, same market.")
@click.option("--rate", type=float, default=None, help="Book updates per second, all symbols together.")
@click.option("--levels", type=int, default=None, help="Price levels per side at start.")
@click.option("--disconnect-every", type=float, default=None, help="Fault: drop every connection every N s.")
@click.option("--ping-interval", type=float, default=None, help="Server WebSocket ping interval, s (Binance: 20).")
@click.option("--protocol", type=click.Choice(SIM_PROTOCOLS), default=None,
              help="Which venue's wire protocol the simulated exchange speaks (default: [sim] protocol, "
                   "else binance; docs/sim.md).")
@click.option("--book-interval", type=click.FloatRange(min=0), default=None,
              help="Hyperliquid: l2Book push interval, s (0: the venue's 0.5 s).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="OKX / Hyperliquid: close idle connections after N s (0: the venue's rule).")
@click.option("--quiet-heartbeat", type=click.FloatRange(min=0), default=None,
              help="OKX: heartbeat book update after N s without a change (0: the venue's ~60 s).")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
              help="Write the bound port into this file once listening.")
@pass_config
def sim(config: Config, host, port, symbols, seed, rate, levels, disconnect_every, ping_interval, protocol,
        book_interval, idle_timeout, quiet_heartbeat, ready_file) -> None:
    """Run the simulated exchange on one port (Binance spot protocol unless --protocol)."""
    from pipeline.config import SimConfig
    from pipeline.pidfile import PidFile
    from pipeline.sim.server import SimOptions, run as run_sim

    base = config.sim or SimConfig()
    opts = SimOptions(
        host=host or base.host,
        port=base.port if port is None else port,
        symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip()) if symbols else base.symbols,
        seed=base.seed if seed is None else seed,
        rate=base.rate if rate is None else rate,
        levels=base.levels if levels is None else levels,
        disconnect_every=base.disconnect_every if disconnect_every is None else disconnect_every,
        ready_file=ready_file,
    )
    for name, value in (("book_interval", book_interval), ("idle_timeout", idle_timeout),
                        ("quiet_heartbeat", quiet_heartbeat)):
        if value is not None:
            setattr(opts, name, value)
    if ping_interval is not None:
        if ping_interval <= 0:
            raise click.BadParameter(f"expected a positive interval, got {ping_interval}", param_hint="--ping-interval")
        opts.ping_interval = ping_interval
    if not opts.symbols:
        raise click.BadParameter("expected at least one symbol", param_hint="--symbols")
    if opts.rate <= 0:
        raise click.BadParameter(f"expected a positive rate, got {opts.rate}", param_hint="--rate")
    protocol = protocol or base.protocol
    config.run_dir.mkdir(parents=True, exist_ok=True)
    with PidFile(config.run_dir / "sim.pid"):
        if protocol == "binance":
            run_sim(opts)
        else:
            from pipeline.sim.venues import run as run_venue
            run_venue(protocol, opts)


@cli.group()
def sink() -> None:
    """Run a sink process (consumers that record the bus)."""


@sink.command("csv")
@pass_config
def sink_csv(config: Config) -> None:
    """Record trades and books as tardis-format daily CSV files under [sinks.csv] dir (docs/csv.md)."""
    from sinks.csv_sink import run_sink

    try:
        run_sink(config)
    except ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None


@cli.command()
@click.argument("capture", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port for WebSocket and REST (0: any free port).")
@click.option("--rate", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Replay speed: 1 = as recorded, 10 = ten times faster, 0 = as fast as the client reads.")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
              help="Write the bound port into this file once listening.")
@pass_config
def replay(config: Config, capture: str, host: str, port: int, rate: float, ready_file: str | None) -> None:
    """Serve CAPTURE (pipeline-capture/1) as a venue: its ws frames and REST bodies (pipeline/sim/replay.py)."""
    from pipeline.sim.replay import CaptureError, run as run_replay

    try:
        run_replay(capture, host, port, rate, ready_file)
    except CaptureError as exc:
        raise click.BadParameter(str(exc), param_hint="CAPTURE") from None


@cli.command()
@click.argument("exchange")
@click.argument("symbol")
@click.option("--depth", type=click.IntRange(min=1), default=None, help="Levels per side to show (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--rest-fallback", is_flag=True,
              help="Best available book: shared memory when live and fresh, else the venue's REST snapshot "
                   "(says which and why; pipeline/app/bestbook.py).")
@pass_config
def book(config: Config, exchange: str, symbol: str, depth: int | None, as_json: bool, rest_fallback: bool) -> None:
    """Print the current top-N view of EXCHANGE SYMBOL from shared memory.

    Exits 3 when the book is not live (syncing, stale, or its ingest stopped), saying why."""
    from pipeline.app import book as book_view

    if rest_fallback:
        _best_book(config, exchange, symbol, depth, as_json)
        return
    try:
        config.exchange(exchange)
        view = book_view.read(config.shm_prefix, exchange, symbol, depth)
    except (ConfigError, SharedMemoryError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(book_view.to_json(view)))
    else:
        click.echo("\n".join(book_view.header_lines(exchange, symbol, view)))
        _print_ladder(view.snap.bids, view.snap.asks)
    if view.reason is not None:
        raise click.exceptions.Exit(book_view.NOT_LIVE_EXIT)


def _print_ladder(bids, asks) -> None:
    click.echo(f"{'BID SIZE':>16} {'BID':>14} | {'ASK':<14} {'ASK SIZE':<16}")
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        left = f"{b[1]:>16.8g} {b[0]:>14.8g}" if b is not None else " " * 31
        right = f"{a[0]:<14.8g} {a[1]:<16.8g}" if a is not None else ""
        click.echo(f"{left} | {right}")


def _best_book(config: Config, exchange: str, symbol: str, depth: int | None, as_json: bool) -> None:
    from pipeline.app.bestbook import BookUnavailable, best_book

    try:
        got = best_book(exchange, symbol, config, depth=depth)
    except (ConfigError, BookUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(got.to_json()))
        return
    click.echo(f"{exchange} {symbol}  source {got.source} ({got.reason})  update id {got.update_id}")
    _print_ladder(got.bids, got.asks)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (stable keys, docs/operations.md).")
@pass_config
def status(config: Config, as_json: bool) -> None:
    """Show processes and feeds of the pipeline.

    Exits 0 when all is well, 3 when a book is not live, 4 when something is down (docs/operations.md)."""
    from pipeline.app import status as status_mod

    st = status_mod.collect(config)
    if as_json:
        click.echo(json.dumps(st))
    else:
        click.echo(status_mod.render_table(st))
    code = status_mod.exit_code(st)
    if code:
        raise click.exceptions.Exit(code)


@cli.group(cls=_LazyGroup)
def bench() -> None:
    """Benchmarks: measured speed of every hop (bench/RESULTS.md, README "Performance")."""


def main() -> None:
    cli(prog_name="pipeline")


if __name__ == "__main__":
    main()
