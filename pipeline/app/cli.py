"""The `pipeline` command: one click group; each command calls the modules that do the work."""

from __future__ import annotations

import functools
import json
import logging
import sys

import click

from pipeline.app.config import PLUGINS, load_config
from pipeline import shards
from pipeline.config import Config
from pipeline.sim import PROTOCOLS as SIM_PROTOCOLS
from pipeline.errors import ConfigError, SharedMemoryError



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
    "grpc-latency": "pipeline.benchmarks.grpc_latency",
    "publisher-cpu": "pipeline.benchmarks.publisher_cpu",
    "trade-path": "pipeline.benchmarks.trade_path",
    "hyperliquid-node": "pipeline.benchmarks.hyperliquid_node",
    "chaos": "pipeline.benchmarks.chaos",
    "remote": "pipeline.benchmarks.remote",
    "shards": "pipeline.benchmarks.shards",
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


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--config`` given after the subcommand (`pipeline status --config X`)."""
    if value is None:
        return
    before = ctx.meta.get("config_path")
    if before is not None and ctx.meta.get("config_from") == "command line" and before != value:
        raise click.UsageError(f"--config given twice ({before} and {value})")
    ctx.meta["config_path"], ctx.meta["config_from"] = value, "command line"  # beats PIPELINE_CONFIG


def config_option(f):
    """Every command takes ``--config FILE`` after its name too (DESIGN.md contract 3)."""
    return click.option("--config", type=click.Path(dir_okay=False), default=None, expose_value=False,
                        is_eager=True, callback=_remember_config,
                        help="Pipeline TOML config (also before the command, or PIPELINE_CONFIG).")(f)


def get_config(ctx: click.Context) -> Config:
    """The config of this invocation, loaded once; a config error ends it with status 2 and one line."""
    if "config" not in ctx.meta:
        try:
            config = load_config(ctx.meta.get("config_path"))
        except ConfigError as exc:
            click.echo(f"config error: {exc}", err=True)
            ctx.exit(2)
        _setup_logging(config.log_level)
        ctx.meta["config"] = config
    return ctx.meta["config"]


def pass_config(f):
    """Like click's pass_obj, with the config loaded when the command runs (after every --config)."""
    @click.pass_context
    def wrapper(ctx: click.Context, *args, **kwargs):
        return ctx.invoke(f, get_config(ctx), *args, **kwargs)
    return config_option(functools.update_wrapper(wrapper, f))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              envvar="PIPELINE_CONFIG", help="Pipeline TOML config (default: the built-in demo config; "
                                             "env PIPELINE_CONFIG; also accepted after the command).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Level-2 order-book market-data pipeline."""
    if config_path is not None:
        source = ctx.get_parameter_source("config_path")
        ctx.meta["config_path"] = config_path
        ctx.meta["config_from"] = "command line" if source is click.core.ParameterSource.COMMANDLINE else "env"


@cli.command()
@config_option
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the whole pipeline under supervisord in the foreground (Ctrl-C or `pipeline stop` stops it)."""
    from pipeline import curve
    from pipeline.app import supervise

    config = get_config(ctx)
    try:
        for ex in config.exchanges.values():
            curve.check_exposure(config, ex)  # refused before anything starts (docs/remote.md)
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        ctx.exit(2)
    try:
        ctx.exit(supervise.run(config, ctx.meta.get("config_path")))
    except supervise.AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    except supervise.SimPortTaken as exc:
        click.echo(str(exc), err=True)
        ctx.exit(supervise.EXIT_PORT_IN_USE)


@cli.command()
@pass_config
def stop(config: Config) -> None:
    """Stop the running pipeline of this config's run_dir (from any directory)."""
    from pipeline.app import supervise

    try:
        pid = supervise.stop(config)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"stopped (pid {pid})" if pid else f"not running (run_dir {config.run_dir})")


@cli.command()
@click.argument("program")
@pass_config
def restart(config: Config, program: str) -> None:
    """Restart one PROGRAM of the running pipeline (e.g. publisher, ingest-NAME, sink-csv)."""
    from pipeline.app import supervise

    try:
        done = supervise.restart(config, program)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PROGRAM") from None
    except ProcessLookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo((done.stdout + done.stderr).strip())
    if done.returncode != 0:
        sys.exit(1)


@cli.command()
@click.argument("name")
@click.option("--shard", type=click.IntRange(min=0), default=None,
              help="Which of the exchange's ingest processes ([exchanges.NAME] processes = N: 0..N-1).")
@pass_config
def ingest(config: Config, name: str, shard: int | None) -> None:
    """Run the ingest process of exchange NAME (as configured under [exchanges.NAME]), or one
    shard of it when it has several processes (docs/operations.md "Sharded ingest")."""
    try:
        config.exchange(name)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    from ingest.main import run_ingest

    try:
        run_ingest(config, name, shard)
    except ConfigError as exc:  # e.g. a tcp endpoint beyond loopback without CURVE
        click.echo(f"config error: {exc}", err=True)
        sys.exit(2)
    except SharedMemoryError as exc:
        raise click.ClickException(str(exc)) from None


def _server_command(plugin) -> click.Command:
    """`pipeline publish` (`pipeline grpc`...): one command per server of the registry (publisher/__init__.py)."""
    @click.command(plugin.command or plugin.name, help=plugin.summary)
    @click.option("--host", default=None, help=f"Address to bind (default: [{plugin.name}] host).")
    @click.option("--port", type=click.IntRange(0, 65535), default=None,
                  help=f"Port to listen on (default: [{plugin.name}] port; 0: any free port).")
    @click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
                  help="Write the bound port into this file once listening.")
    @pass_config
    def command(config: Config, host: str | None, port: int | None, ready_file: str | None) -> None:
        server = plugin.load()
        conf_host, conf_port = server.address(config)
        try:
            server.run(config, host, port, ready_file)
        except ConfigError as exc:  # e.g. a bad L2_THROTTLE_<NAME>_MS in the environment
            click.echo(f"config error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:
            _cannot_listen(config, plugin.name, host or conf_host, conf_port if port is None else port, exc)
    return command


def _cannot_listen(config: Config, name: str, host: str, port: int, exc: OSError) -> None:
    """One line, then exit 1, or EXIT_PORT_IN_USE when the port is taken (not retried by supervisord)."""
    import errno

    from pipeline.app.supervise import EXIT_PORT_IN_USE, port_in_use_exit

    if exc.errno != errno.EADDRINUSE:
        raise click.ClickException(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    line = (f"{name}: cannot listen on {host}:{port}: address already in use (another program or pipeline "
            f"holds it); not retrying: free the port, then `pipeline restart {name}`")
    click.echo(line, err=True)
    port_in_use_exit(config, name, line)
    sys.exit(EXIT_PORT_IN_USE)


for _server in PLUGINS.servers:
    cli.add_command(_server_command(_server))


@cli.command()
@click.option("--host", default=None, help="Address to bind (default: [sim] host or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port for WebSocket and REST (default: [sim] port, 9100).")
@click.option("--symbols", default=None, help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT.")
@click.option("--seed", type=int, default=None, help="Random seed: same seed, same market.")
@click.option("--rate", type=float, default=None, help="Book updates per second, all symbols together.")
@click.option("--levels", type=int, default=None, help="Price levels per side at start.")
@click.option("--disconnect-every", type=float, default=None, help="Fault: drop every connection every N s.")
@click.option("--ping-interval", type=float, default=None, help="Server WebSocket ping interval, s (Binance: 20).")
@click.option("--protocol", type=click.Choice(SIM_PROTOCOLS.names()), default=None,
              help="Which venue's wire protocol the simulated exchange speaks (default: [sim] protocol, "
                   "else binance; docs/sim.md).")
@click.option("--book-interval", type=click.FloatRange(min=0), default=None,
              help="Hyperliquid: plain l2Book push interval, s (0: the venue's 5 s; fast: 0.5 s).")
@click.option("--book-speedup", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Hyperliquid: divide both l2Book cadences by this (tests: 10 -> 0.5 s plain, 0.05 s fast).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None,
              help="OKX / Hyperliquid: close idle connections after N s (0: the venue's rule).")
@click.option("--quiet-heartbeat", type=click.FloatRange(min=0), default=None,
              help="OKX: heartbeat book update after N s without a change (0: the venue's ~60 s).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="hyperliquid_node: the node data directory to write the hourly files to.")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
              help="Write the bound port into this file once listening.")
@pass_config
def sim(config: Config, host, port, symbols, seed, rate, levels, disconnect_every, ping_interval, protocol,
        book_interval, book_speedup, idle_timeout, quiet_heartbeat, out, ready_file) -> None:
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
    if out is not None:
        opts.out = out
    elif protocol == "hyperliquid_node" or (protocol is None and base.protocol == "hyperliquid_node"):
        raise click.BadParameter("the node simulator writes files: give the directory", param_hint="--out")
    for name, value in (("book_interval", book_interval), ("book_speedup", book_speedup),
                        ("idle_timeout", idle_timeout), ("quiet_heartbeat", quiet_heartbeat)):
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
    config.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # ipc sockets, pid files: ours only
    with PidFile(config.run_dir / "sim.pid"):
        try:
            if protocol == "binance":
                run_sim(opts)
            else:
                from pipeline.sim.venues import run as run_venue
                run_venue(protocol, opts)
        except OSError as exc:
            _cannot_listen(config, "sim", opts.host, opts.port, exc)


class _SinkGroup(click.Group):
    """`pipeline sink NAME`: the sinks of the registry (sinks/__init__.py); an unknown NAME names the known."""

    kind = "sink"

    @property
    def registry(self):
        return PLUGINS.sinks

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self.registry.names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.registry:
            return None
        plugin = self.registry.get(name)

        @click.command(name, help=plugin.summary)
        @pass_config
        def command(config: Config) -> None:
            try:
                plugin.load().run(config)
            except ConfigError as exc:
                raise click.ClickException(f"config error: {exc}") from None
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.registry and not args[0].startswith("-"):
            known = ", ".join(self.registry.names())
            raise click.UsageError(f'unknown {self.kind} "{args[0]}" (known: {known})', ctx)
        return super().resolve_command(ctx, args)


class _BridgeGroup(_SinkGroup):
    """`pipeline bridge NAME`: the bridges of publisher/__init__.py BRIDGES (their [bridges.NAME] table)."""

    kind = "bridge"

    @property
    def registry(self):
        return PLUGINS.bridges


@cli.group(cls=_BridgeGroup)
@config_option
def bridge() -> None:
    """Run a bridge process (the bus to another messaging system): pipeline bridge NAME."""


@cli.group(cls=_SinkGroup)
@config_option
def sink() -> None:
    """Run a sink process (consumers that record the bus): pipeline sink NAME."""


@cli.command()
@click.argument("capture", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port for WebSocket and REST (0: any free port).")
@click.option("--rate", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Replay speed: 1 = as recorded, 10 = ten times faster, 0 = as fast as the client reads.")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None,
              help="Write the bound port into this file once listening.")
@pass_config
def replay(config: Config, capture: tuple[str, ...], host: str, port: int, rate: float,
           ready_file: str | None) -> None:
    """Serve CAPTURE (pipeline-capture/1) as a venue: its ws frames and REST bodies (pipeline/sim/replay.py).
    Several files of one recording ([sinks.raw] hourly files) are served as one, in the order given."""
    from pipeline.sim.replay import CaptureError, run as run_replay

    try:
        run_replay(list(capture), host, port, rate, ready_file)
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
        view = book_view.read(config.shm_prefix, exchange, symbol, depth,
                              unit=shards.unit_of(config, exchange, symbol))
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


def _remote_endpoint(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    from pipeline.app.status import remote_endpoint

    try:
        return [remote_endpoint(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (stable keys, docs/operations.md).")
@click.option("--remote", "remotes", multiple=True, callback=_remote_endpoint, metavar="HOST:PORT",
              help="Another host's ingest instead: its snapshot_endpoint, or nats://HOST:PORT for the "
                   "NATS bridges behind that server (repeat for several); shows their feeds and the clock "
                   "offset between the hosts (docs/remote.md).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="With --remote: seconds to wait for each answer.")
@pass_config
def status(config: Config, as_json: bool, remotes: list[str], timeout: float) -> None:
    """Show processes and feeds of the pipeline.

    Exits 0 when all is well, 3 when a book is not live, 4 when something is down (docs/operations.md)."""
    from pipeline.app import status as status_mod

    st = status_mod.collect_remote(config, remotes, timeout) if remotes else status_mod.collect(config)
    if as_json:
        click.echo(json.dumps(st))
    else:
        click.echo(status_mod.render_table(st))
    code = status_mod.exit_code(st)
    if code:
        raise click.exceptions.Exit(code)


@cli.group()
@config_option
def keys() -> None:
    """CURVE keys for the bus's tcp endpoints (docs/remote.md)."""


@keys.command("generate")
@config_option
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--client", "clients", multiple=True, default=("client",), show_default=True,
              help="Name of a client key pair to write (repeat for several consumers).")
def keys_generate(directory: str, clients: tuple[str, ...]) -> None:
    """Write a server key pair and client key pairs into DIRECTORY (zmq.auth certificates).

    The clients' public keys are also copied into DIRECTORY/clients, the directory
    `[bus] curve_clients_dir` names on the ingest's host."""
    from pathlib import Path

    from pipeline import curve

    try:
        written = curve.generate(Path(directory), tuple(clients))
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(str(path))
    d = Path(directory).resolve()
    click.echo(f"ingest host: [bus] curve_secret_key = \"{d / 'server.key_secret'}\", "
               f"curve_clients_dir = \"{d / 'clients'}\"")
    click.echo(f"consumer host: [bus] curve_client_secret_key = \"{d / (clients[0] + '.key_secret')}\", "
               f"curve_server_public_key = \"{d / 'server.key'}\"")


def _stream_change(config: Config, op: str, exchange: str, symbols: tuple[str, ...]) -> dict:
    from pipeline.errors import StreamError
    from pipeline.streams import check_symbols, exchange_request

    try:
        config.exchange(exchange)
        return exchange_request(config, exchange, {"op": op, "symbols": list(check_symbols(symbols))})
    except ConfigError as exc:
        raise click.ClickException(f"unknown exchange: {exc}") from None
    except StreamError as exc:
        raise click.ClickException(f"{op} refused ({exc.code}): {exc}") from None


@cli.command()
@click.argument("exchange")
@click.argument("symbols", nargs=-1, required=True)
@pass_config
def subscribe(config: Config, exchange: str, symbols: tuple[str, ...]) -> None:
    """Follow SYMBOLS of the running EXCHANGE too (kept across restarts; docs/streams.md)."""
    reply = _stream_change(config, "subscribe", exchange, symbols)
    if reply["added"]:
        click.echo(f"{exchange}: subscribed {', '.join(reply['added'])}")
    if reply["already"]:
        click.echo(f"{exchange}: already followed: {', '.join(reply['already'])}")


@cli.command()
@click.argument("exchange")
@click.argument("symbols", nargs=-1, required=True)
@pass_config
def unsubscribe(config: Config, exchange: str, symbols: tuple[str, ...]) -> None:
    """Stop following SYMBOLS of the running EXCHANGE (their books end in state "removed")."""
    reply = _stream_change(config, "unsubscribe", exchange, symbols)
    click.echo(f"{exchange}: unsubscribed {', '.join(reply['removed'])}")


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (stable keys, docs/streams.md).")
@pass_config
@click.pass_context
def streams(ctx: click.Context, config: Config, as_json: bool) -> None:
    """Every stream: where it comes from (config or runtime), state, since, counters, rate."""
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.app.streams import print_streams
    from pipeline.streams import streams_overview

    overview = streams_overview(config)
    if as_json:
        click.echo(json.dumps(overview, indent=2))
    else:
        print_streams(overview)


@streams.command("reset")
@click.argument("exchange")
@pass_config
def streams_reset(config: Config, exchange: str) -> None:
    """Drop EXCHANGE's runtime changes: back to the config's symbols (at once if it runs)."""
    from pipeline.errors import StreamError
    from pipeline.streams import reset_changes

    try:
        reply = reset_changes(config, exchange)
    except ConfigError as exc:
        raise click.ClickException(f"unknown exchange: {exc}") from None
    except StreamError as exc:
        raise click.ClickException(f"reset refused ({exc.code}): {exc}") from None
    parts = [f"re-added {', '.join(reply['added'])}" if reply["added"] else "",
             f"removed {', '.join(reply['removed'])}" if reply["removed"] else ""]
    done = "; ".join(p for p in parts if p) or "no runtime changes"
    click.echo(f"{exchange}: back to the config's symbols ({done})")


@cli.group(cls=_LazyGroup)
@config_option
def bench() -> None:
    """Benchmarks: measured speed of every hop (bench/RESULTS.md, README "Performance")."""


def main() -> None:
    cli(prog_name="pipeline")


if __name__ == "__main__":
    main()
