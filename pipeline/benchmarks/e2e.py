"""`pipeline bench e2e`: the whole pipeline as real processes, measured hop by hop.

For each ``--rates`` value (sim book updates/s, all symbols; ``depth@0ms``, so one update is
one frame) a fresh pipeline is started on loopback (pipeline/benchmarks/e2e_stack.py):
`pipeline sim --port 0`, `pipeline sink csv`, `pipeline ingest sim`, `pipeline publish --port 0`,
in a temporary run_dir, plus a ZeroMQ SUB subscriber in a process of its own
(pipeline/benchmarks/e2e_clients.py).  After the books are live and a warm-up, one window of
``--seconds`` measures:

- whether the ingest kept up (the criterion is `e2e_report.CRITERION`, printed with the
  results and explained in bench/RESULTS.md): sim and ingest update counters read back to back
  at both ends of the window, the ingest's receive->publish lag sampled every 0.25 s from its
  shared-memory header, reconnects, gaps and resyncs;
- trade latency to the ZeroMQ subscriber (bus ``ts_received`` -> subscriber receive);
- CPU % (of one core) and RSS of every process (psutil), ingest CPU µs per depth message,
  and the rows/s the CSV sink wrote (its stats file) with its rows per CPU-second.

At one rate (``--ws-rate``, default the listed rate closest to 20000) the same pipeline then
serves 1, 10 and 100 WebSocket clients (``--clients``), each count in a window of its own, the
clients in separate processes (``--clients-per-process``) subscribed as a screen is (trades +
throttled book snapshots of every symbol); their trade latency is ``time_received`` -> client
receive, on the same host clock.

Output: a JSON file and a PNG plot (latency CDF per hop) in ``--out``, a dated row appended to
``--results`` (bench/RESULTS.md by default), and a summary with each team goal next to the
measured figure.  Every process is stopped by PID in ``finally`` and leftover shared memory of
the run is removed; the result records anything that had to be cleaned.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from pipeline.benchmarks import e2e_report as report
from pipeline.benchmarks.e2e_clients import load as load_samples
from pipeline.benchmarks.e2e_stack import (PIPELINE, Sampler, Stack, StackError, leftovers, symbol_names,
                                           wait_for)

SCHEMA = "pipeline-bench-e2e/1"
CLIENTS_MODULE = [sys.executable, "-m", "pipeline.benchmarks.e2e_clients"]
LAG_SAMPLE_S = 0.25
REPO_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "RESULTS.md"


def _int_list(value: str, what: str) -> list[int]:
    try:
        out = [int(float(v)) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}", param_hint=what) from None
    if not out or any(v <= 0 for v in out):
        raise click.BadParameter(f"expected positive numbers, got {value!r}", param_hint=what)
    return out


# ------------------------------------------------------------------------- windows

def _window(stack: Stack, sampler: Sampler, seconds: float) -> tuple[dict, dict, list[tuple[int, int]]]:
    """(first reading, last reading, lag samples) over ``seconds``; lag read every LAG_SAMPLE_S."""
    r0 = sampler.read()
    lags = []
    end = r0.t + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(LAG_SAMPLE_S, left))
        lags.append(sampler.lag_sample())
        for name in (n for n in stack.failed() if not n.startswith("ws")):  # a client failing is a figure
            raise StackError(f"{name} exited with {stack.procs[name].returncode} during the measurement:\n"
                             f"{stack.log_tail(name)}")
    return r0, sampler.read(), lags


def _usage(r0, r1) -> tuple[dict, dict]:
    dt = r1.t - r0.t
    cpu = {n: round(100 * (r1.cpu[n] - r0.cpu.get(n, 0.0)) / dt, 1) for n in r1.cpu}
    rss = {n: round(v / 2**20, 1) for n, v in r1.rss.items()}
    return cpu, rss


def rate_figures(rate: float, r0, r1, lags: list[tuple[int, int]]) -> dict:
    """One rate's figures from two readings (see `e2e_report.kept_up` for the criterion)."""
    dt = r1.t - r0.t
    sim_n = r1.sim_updates - r0.sim_updates
    ing_n = r1.ingest_updates - r0.ingest_updates
    cpu, rss = _usage(r0, r1)
    ingest_cpu_s = r1.cpu["ingest"] - r0.cpu["ingest"]
    row = {
        "rate": rate, "window_s": round(dt, 2),
        "sim_updates_per_s": round(sim_n / dt, 1), "sim_measured_rate": r1.sim_measured_rate,
        "sim_trades_per_s": round((r1.sim_trades - r0.sim_trades) / dt, 1),
        "ingest_updates_per_s": round(ing_n / dt, 1),
        "ingest_trades_per_s": round((r1.ingest_trades - r0.ingest_trades) / dt, 1),
        "delivered_ratio": round(ing_n / sim_n, 4) if sim_n else 0.0,
        "backlog_growth_updates": (sim_n - ing_n),
        "publish_lag_us_max": max((a for a, _ in lags), default=0),
        "publish_lag_us_p90": int(np.percentile([a for a, _ in lags], 90)) if lags else 0,
        "publish_lag_us_last": lags[-1][0] if lags else 0,
        "publish_lag_interval_max_us": max((b for _, b in lags), default=0),
        "loop_lag_max_us": r1.process_stats["loop_lag_max_us"],
        "reconnects": r1.process_stats["reconnects"] - r0.process_stats["reconnects"],
        "gaps": r1.ingest_gaps - r0.ingest_gaps, "resyncs": r1.ingest_resyncs - r0.ingest_resyncs,
        "sim_slow_clients_dropped": r1.sim_slow_dropped - r0.sim_slow_dropped,
        "ingest_cpu_us_per_msg": round(1e6 * ingest_cpu_s / ing_n, 2) if ing_n else None,
        "cpu_percent": cpu, "rss_mb": rss, "csv": None,
    }
    if r0.sink and r1.sink:
        d = {k: r1.sink[k] - r0.sink[k] for k in ("rows", "book_rows", "trade_rows", "bytes")}
        sink_cpu = r1.cpu["sink-csv"] - r0.cpu["sink-csv"]
        row["csv"] = {
            "rows_per_s": round(d["rows"] / dt), "book_rows_per_s": round(d["book_rows"] / dt),
            "trade_rows_per_s": round(d["trade_rows"] / dt), "mb_per_s": round(d["bytes"] / dt / 2**20, 2),
            "rows_per_cpu_s": round(d["rows"] / sink_cpu) if sink_cpu > 0 else None,
            **{k: r1.sink.get(k) for k in ("book_resyncs", "gaps_filled", "trades_lost", "errors", "rows_dropped")},
        }
    ok, why = report.kept_up(row)
    row["kept_up"], row["why_not"] = ok, why
    return row


def _in_window(arrays: dict, recv_key: str, lat_key: str, w: tuple[int, int]) -> np.ndarray:
    recv, lat = arrays[recv_key], arrays[lat_key]
    return lat[(recv >= w[0]) & (recv <= w[1])]


# ------------------------------------------------------------------------- clients

def _start_client(stack: Stack, name: str, args: list[str]) -> tuple[Path, Path]:
    out, ready = stack.workdir / f"{name}.npz", stack.workdir / f"{name}.ready"
    stack.start_process(name, CLIENTS_MODULE + args + ["--out", str(out), "--ready", str(ready)])
    return out, ready


def _wait_ready(stack: Stack, names: list[str], readies: list[Path], timeout: float = 30.0) -> None:
    def ready():
        for n in names:
            if stack.procs[n].poll() is not None:
                raise StackError(f"{n} exited with {stack.procs[n].returncode}:\n{stack.log_tail(n)}")
        return all(r.exists() for r in readies)
    wait_for(ready, timeout, ", ".join(names) + " ready")


def _stop_and_load(stack: Stack, name: str, out: Path) -> tuple[dict, dict]:
    code = stack.stop_process(name, timeout=20)
    if not out.exists():
        raise StackError(f"{name} wrote no samples (exit {code}):\n{stack.log_tail(name)}")
    return load_samples(out)


def ws_phase(stack: Stack, sampler: Sampler, clients: int, per_process: int, seconds: float,
             warmup: float) -> tuple[dict, np.ndarray, tuple[int, int]]:
    """N WebSocket clients in ceil(N / per_process) processes: figures, latencies, window."""
    n_proc = math.ceil(clients / per_process)
    names, outs, readies = [], [], []
    first = 0
    url = f"ws://127.0.0.1:{stack.ws_port}/"
    for i in range(n_proc):
        n = min(per_process, clients - first)
        name = f"ws{clients}-{i}"
        out, ready = _start_client(stack, name, ["ws", "--url", url, "--clients", str(n), "--first-id", str(first),
                                                 "--max-seconds", str(seconds * 4 + 60)])
        names.append(name), outs.append(out), readies.append(ready)
        first += n
    errors = []
    try:
        try:
            _wait_ready(stack, names, readies, timeout=45)
        except StackError as exc:  # measured anyway, with the client processes that did start
            errors.append(str(exc)[-500:])
        sampler.watch("ws-clients", [stack.procs[n].pid for n in names if stack.procs[n].poll() is None])
        time.sleep(warmup)
        r0, r1, lags = _window(stack, sampler, seconds)
    finally:
        stack.stop_processes(names, timeout=20)
        loaded = []
        for name, out in zip(names, outs):
            try:
                loaded.append(_stop_and_load(stack, name, out))
            except StackError as exc:
                errors.append(str(exc)[-500:])
                loaded.append(None)
        sampler.unwatch("ws-clients")
    window = (r0.wall_us, r1.wall_us)
    lat = np.concatenate([_in_window(a, "recv_us", "lat_us", window) for m, a in filter(None, loaded)] or [np.zeros(0)])
    cpu, rss = _usage(r0, r1)
    frames = sum(sum(m["frames"]) for m, _ in filter(None, loaded))
    closed = sum(len(m["closed_early"]) for m, _ in filter(None, loaded))
    failed = sum(len(m["connect_failed"]) + m["unwelcomed"] for m, _ in filter(None, loaded))
    unconfirmed = sum(m["unsubscribed"] for m, _ in filter(None, loaded))
    errors += sorted({e for m, _ in filter(None, loaded) for e in m["connect_failed"]})[:3]
    row = {"clients": clients, "processes": n_proc, "rate": stack.rate, "window_s": round(r1.t - r0.t, 2),
           "trade_latency_us": report.latency(lat), "frames_total": frames,
           "trades_per_client_per_s": round(lat.size / clients / max(r1.t - r0.t, 1e-9), 1),
           "closed_early": closed, "not_connected": failed, "subscribe_unconfirmed": unconfirmed,
           "client_processes_failed": sum(1 for x in loaded if x is None), "errors": errors,
           "cpu_percent": cpu, "rss_mb": rss,
           "publish_lag_us_max": max((a for a, _ in lags), default=0)}
    return row, lat, window


# ---------------------------------------------------------------------------- run

def run_rate(rate: float, symbols: list[str], seconds: float, warmup: float, ws_clients: list[int] = (),
             per_process: int = 25, log=lambda _: None, publisher: bool = True,
             sink: bool = True, processes: int = 1, ingest_code=None) -> tuple[dict, list[dict], dict]:
    """One pipeline at ``rate``: its figures, the WebSocket rows (if ``ws_clients``) and samples for the plot.

    Without ``publisher`` or ``sink`` that process is not started (pipeline/benchmarks/live_ingest.py, pipeline/benchmarks/csv_sink.py).
    """
    if ws_clients and not publisher:
        raise ValueError("WebSocket clients need the publisher")
    stack = Stack(rate, symbols, publisher=publisher, sink=sink, max_clients=max(ws_clients, default=1),
                  processes=processes, ingest_code=ingest_code)
    samples: dict = {"ws": {}}
    ws_rows, windows = [], []
    sampler = None
    try:
        stack.start()
        zmq_out, zmq_ready = _start_client(stack, "zmq-sub", ["zmq", "--config", str(stack.config_path),
                                                              "--max-seconds", str(seconds * 10 + 120)])
        _wait_ready(stack, ["zmq-sub"], [zmq_ready])
        sampler = Sampler(stack)
        time.sleep(warmup)
        r0, r1, lags = _window(stack, sampler, seconds)
        row = rate_figures(rate, r0, r1, lags)
        log(f"rate {rate:g}: ingest {row['ingest_updates_per_s']:.0f}/s, kept up: {row['kept_up']}")
        for n in ws_clients:
            w, lat, window = ws_phase(stack, sampler, n, per_process, seconds, warmup)
            ws_rows.append(w)
            samples["ws"][n] = lat
            windows.append(window)
            log(f"rate {rate:g}, {n} WebSocket clients: p99 {w['trade_latency_us']['p99']} µs")
        _, z = _stop_and_load(stack, "zmq-sub", zmq_out)
        win = (r0.wall_us, r1.wall_us)
        samples["zmq"] = _in_window(z, "recv_us", "lat_us", win)
        row["zmq_trade_latency_us"] = report.latency(samples["zmq"])
        row["zmq_l2_latency_us"] = report.latency(_in_window(z, "l2_recv_us", "l2_lat_us", win))
        for w, window in zip(ws_rows, windows):
            w["zmq_trade_latency_us"] = report.latency(_in_window(z, "recv_us", "lat_us", window))
    finally:
        if sampler is not None:
            sampler.close()
        cleaned = stack.close()
        left = leftovers(stack)
    row["pids"] = {name: p.pid for name, p in stack.procs.items()}
    row["shm_prefix"] = stack.config.shm_prefix
    row["cleaned_shm"] = cleaned  # segments a process left behind (removed here); normally none
    row["leftovers"] = left        # processes and segments still there after the cleanup: none
    return row, ws_rows, samples


def _choose_ws_rate(rates: list[float], ws_rate: float | None) -> float:
    if ws_rate is not None:
        return ws_rate
    return min(rates, key=lambda r: (abs(r - 20_000), r))


def summarize(rows: list[dict], ws_rows: list[dict], ws_rate: float) -> dict:
    kept = [r for r in rows if r["kept_up"]]
    best = max(kept, key=lambda r: r["rate"]) if kept else None
    at_ws = next((r for r in rows if r["rate"] == ws_rate), None)
    cap_row = best or (min(rows, key=lambda r: r["ingest_cpu_us_per_msg"] or math.inf) if rows else None)
    cap = cap_row and cap_row["ingest_cpu_us_per_msg"]
    csv = at_ws and at_ws["csv"]
    return {
        "max_sustained_rate": best["rate"] if best else None,
        "sustained_ingest_msgs_per_s": round(best["ingest_updates_per_s"]) if best else None,
        "sustained_ingest_cpu_us_per_msg": best["ingest_cpu_us_per_msg"] if best else None,
        "max_ingest_msgs_per_s": round(max(r["ingest_updates_per_s"] for r in rows)) if rows else None,
        "ingest_capacity_msgs_per_s": round(1e6 / cap) if cap else None,
        "ws_rate": ws_rate,
        "zmq_trade_latency_us": at_ws["zmq_trade_latency_us"] if at_ws else None,
        "ws_trade_latency_us": {str(w["clients"]): w["trade_latency_us"] for w in ws_rows},
        "ingest_rss_mb": max((r["rss_mb"].get("ingest", 0) for r in rows), default=None),
        "csv_rows_per_s": csv["rows_per_s"] if csv else None,
        "csv_rows_per_cpu_s": max((r["csv"]["rows_per_cpu_s"] or 0 for r in rows if r["csv"]), default=None) or None,
    }


@click.command()
@click.option("--rates", default="2000,10000,20000,40000", show_default=True,
              help="Sim book updates/s (all symbols together), comma-separated; one pipeline per rate.")
@click.option("--seconds", type=click.FloatRange(min=0.5), default=8.0, show_default=True,
              help="Measurement window per rate and per client count (the warm-up scales with it).")
@click.option("--clients", "clients_opt", default="1,10,100", show_default=True,
              help="WebSocket client counts, comma-separated, each measured at --ws-rate.")
@click.option("--ws-rate", type=click.FloatRange(min=1), default=None,
              help="Rate of the WebSocket runs (default: the --rates value closest to 20000; "
                   "a rate not in --rates gets a pipeline of its own).")
@click.option("--clients-per-process", type=click.IntRange(min=1), default=25, show_default=True,
              help="WebSocket clients per client process.")
@click.option("--symbols", type=click.IntRange(min=1, max=1000), default=4, show_default=True,
              help="Symbols on the sim and the ingest (BTCUSDT, ETHUSDT, SOLUSDT, BNBUSDT, then S001USDT...).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory for the JSON result and the PNG plot (default: $TMPDIR/l2p-bench-e2e).")
@click.option("--results", "results_path", type=click.Path(dir_okay=False), default=str(REPO_RESULTS),
              show_default=True, help="Markdown file the dated result row is appended to.")
@click.option("--shared/--idle", "shared", default=None,
              help="Record the machine as shared with other work, or idle (default: from the load average).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result on stdout (the summary goes to stderr).")
def command(rates: str, seconds: float, clients_opt: str, ws_rate: float | None, clients_per_process: int,
            symbols: int, out_dir: str | None, results_path: str, shared: bool | None, as_json: bool) -> None:
    """End to end: sim -> ingest -> ZeroMQ / WebSocket / CSV as real processes; rates, latency, CPU, RSS, rows/s."""
    try:  # the plot comes at the end of minutes of measuring: say now that it cannot be drawn
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException("bench e2e draws its plot with matplotlib, which `make run` does not install: "
                                   ".venv/bin/pip install matplotlib (the venv of `make test` has it)") from None
    rate_list = [float(r) for r in _int_list(rates, "--rates")]
    client_list = _int_list(clients_opt, "--clients")
    ws_r = _choose_ws_rate(rate_list, ws_rate)
    load1 = os.getloadavg()[0]
    if shared is None:
        shared = load1 > 0.5
    out = Path(out_dir) if out_dir else Path(tempfile.gettempdir()) / "l2p-bench-e2e"
    out.mkdir(parents=True, exist_ok=True)
    warmup = min(1.0, seconds / 4)
    names = symbol_names(symbols)
    echo = (lambda m: click.echo(m, err=True))

    plotting = report.prefetch_plotting()
    rows, ws_rows, plot_samples = [], [], {}
    started = time.monotonic()
    plan = sorted(set(rate_list) | {ws_r})
    for rate in plan:
        try:
            row, ws, samples = run_rate(rate, names, seconds, warmup, client_list if rate == ws_r else [],
                                        clients_per_process, echo)
        except StackError as exc:
            raise click.ClickException(f"rate {rate:g}: {exc}") from None
        if rate in rate_list:
            rows.append(row)
        if rate == ws_r:
            ws_rows = ws
            plot_samples = samples
            if rate not in rate_list:
                ws_only = row
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    json_path, png_path = out / f"e2e-{stamp}.json", out / f"e2e-{stamp}.png"
    result = {
        "schema": SCHEMA, "date": report.utc_now(),
        "machine": {**report.machine(shared), "load1_before": round(load1, 2)},
        "params": {"rates": rate_list, "seconds": seconds, "warmup_s": warmup, "clients": client_list,
                   "ws_rate": ws_r, "clients_per_process": clients_per_process, "symbols": symbols,
                   "depth_stream": "depth@0ms", "ws_subscription": "trades + book snapshots (default depth, throttle)"},
        "criterion": report.CRITERION,
        "rates": rows, "ws": ws_rows,
        "files": {"json": str(json_path), "plot": str(png_path), "results": str(Path(results_path))},
    }
    if ws_r not in rate_list:
        result["ws_rate_pipeline"] = ws_only
    result["summary"] = summarize(rows, ws_rows, ws_r)
    if ws_r not in rate_list:
        result["summary"]["zmq_trade_latency_us"] = ws_only["zmq_trade_latency_us"]
    result["goals"] = report.goals(result)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    hops = [(f"ingest -> ZeroMQ SUB ({ws_r:g}/s)", plot_samples.get("zmq", np.zeros(0)))]
    hops += [(f"ingest -> WebSocket, {n} client{'s' if n > 1 else ''}", lat) for n, lat in plot_samples["ws"].items()]
    plotting.join()
    report.plot(png_path, hops, f"trade latency per hop, {symbols} symbols, sim {ws_r:g} book updates/s "
                                f"({result['machine']['cores']} cores{', shared machine' if shared else ''})")
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    report.append_results(Path(results_path), result)
    text = report.summary_text(result)
    if as_json:
        click.echo(json.dumps(result))
        click.echo(text, err=True)
    else:
        click.echo(text)
