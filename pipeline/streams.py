"""Runtime streams: the state file of each exchange's changes and the ingest's control socket.

DESIGN.md contract 9.  Symbols added or removed while an ingest runs are kept as a
difference from the config, ``RUN_DIR/streams-EXCHANGE.json``::

    {"exchange": "sim", "added": ["ETHUSDT"], "removed": ["SOLUSDT"]}

The ingest writes it (atomically: a temporary file, then rename) after every change and
applies it on top of the config at every start, so a restart, or supervisord's restart
after kill -9, comes back with the same symbols.  A difference rather than a list: a
symbol later added to the config file is followed, and one dropped from it stays dropped.
``pipeline streams reset EX`` deletes the file (through the ingest when it runs).

The control socket ``RUN_DIR/ingest-EXCHANGE.ctl`` is a Unix stream socket: the one
control API of an ingest, which the CLI, the publisher's HTTP API and the page all call.
One JSON object per line in each direction::

    {"op": "subscribe", "symbols": ["ETHUSDT"]}   -> {"ok": true, "added": [...], "already": [...]}
    {"op": "unsubscribe", "symbols": ["ETHUSDT"]} -> {"ok": true, "removed": [...]}
    {"op": "streams"}                             -> {"ok": true, "exchange": ..., "streams": [...], ...}
    {"op": "reset"}                               -> {"ok": true, "added": [...], "removed": [...]}
    any refusal                                   -> {"ok": false, "code": "unknown_symbol", "error": "..."}

A request changes all its symbols or none.  The socket lives in run_dir (mode 0600 through
run_dir's own permissions), so only the user who runs the pipeline can use it.

An exchange with ``processes = N`` > 1 has N ingest processes (pipeline/shards.py), each with its
own control socket ``ingest-NAME.K.ctl`` and state file ``streams-NAME.K.json``.  Callers ask for
the exchange (``exchange_request``, ``exchange_request_async``): a request is split by the
symbols' shard (``shards.shard_of``) and each part goes to its process; the replies are merged
into the one-exchange reply above (``streams`` rows gain ``shard``, the entry ``processes``).
Each part changes all its symbols or none; when one process refuses, the parts done before
stay done and the error names them.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pipeline import shards
from pipeline.errors import StreamError

MAX_REQUEST_BYTES = 64 * 1024  # one control request line
MAX_SYMBOLS_PER_REQUEST = 100
SYMBOL_BYTES = 31  # a shared-memory name slot holds 31 ASCII bytes (pipeline/shm.py NAME_BYTES - 1)
_SYMBOL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:@/")


def state_path(run_dir: Path, exchange: str) -> Path:
    return Path(run_dir) / f"streams-{exchange}.json"


def control_path(run_dir: Path, exchange: str) -> Path:
    return Path(run_dir) / f"ingest-{exchange}.ctl"


@dataclass(frozen=True)
class Changes:
    """Runtime changes of one exchange, relative to its configured symbols."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def apply(self, configured) -> tuple[str, ...]:
        """The symbols to follow: the configured ones not removed, then the added ones."""
        gone = set(self.removed)
        out = [s for s in configured if s not in gone]
        out += [s for s in self.added if s not in out]
        return tuple(out)

    @staticmethod
    def between(configured, current) -> "Changes":
        """The changes that turn ``configured`` into ``current``."""
        cfg, cur = set(configured), set(current)
        return Changes(tuple(s for s in current if s not in cfg), tuple(s for s in configured if s not in cur))

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def check_symbol(symbol: object) -> str:
    """A symbol as it can be followed (a shared-memory name, a file name part); StreamError otherwise."""
    if not isinstance(symbol, str) or not symbol:
        raise StreamError(f"expected a symbol name, got {json.dumps(symbol)}")
    if len(symbol.encode()) > SYMBOL_BYTES or not set(symbol) <= _SYMBOL_CHARS:
        raise StreamError(f"symbol {json.dumps(symbol)}: at most {SYMBOL_BYTES} characters among letters, "
                          "digits and - _ . : @ /")
    return symbol


def check_symbols(symbols: object) -> tuple[str, ...]:
    """A request's symbol list: 1..MAX_SYMBOLS_PER_REQUEST names, duplicates dropped."""
    if isinstance(symbols, str) or not isinstance(symbols, (list, tuple)):
        raise StreamError(f"symbols: expected a list of symbol names, got {json.dumps(symbols, default=str)}")
    if not symbols or len(symbols) > MAX_SYMBOLS_PER_REQUEST:
        raise StreamError(f"symbols: expected 1 to {MAX_SYMBOLS_PER_REQUEST} symbols, got {len(symbols)}")
    return tuple(dict.fromkeys(check_symbol(s) for s in symbols))


def load_changes(run_dir: Path, exchange: str) -> Changes:
    """The saved changes (none when there is no file).  A file that cannot be read is an
    error naming it: starting with other symbols than the operator chose would be wrong."""
    path = state_path(run_dir, exchange)
    try:
        raw = json.loads(path.read_text())
        added, removed = raw.get("added", []), raw.get("removed", [])
        if not all(isinstance(s, str) for s in [*added, *removed]):
            raise ValueError("symbols must be strings")
        return Changes(tuple(added), tuple(removed))
    except FileNotFoundError:
        return Changes()
    except (ValueError, AttributeError, TypeError) as exc:
        raise StreamError(f"{path}: unreadable runtime stream changes ({exc}); fix or delete it "
                          f"(pipeline streams reset {exchange})", "bad_state_file") from None


def save_changes(run_dir: Path, exchange: str, changes: Changes) -> None:
    """Write the changes atomically (no changes: no file)."""
    path = state_path(run_dir, exchange)
    if not changes:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"exchange": exchange, "added": list(changes.added),
                               "removed": list(changes.removed)}, indent=1) + "\n")
    os.replace(tmp, path)


def control_request(run_dir: Path, exchange: str, request: dict, timeout: float = 30.0) -> dict:
    """Send one request to the ingest of ``exchange`` and return its reply (``ok`` true).

    Raises StreamError: the ingest's refusal (its code and reason), or ``not_running`` when
    nothing listens on the control socket."""
    path = control_path(run_dir, exchange)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise StreamError(f"the ingest of {exchange!r} is not running (no control socket {path})",
                              "not_running") from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise StreamError(f"the ingest of {exchange!r} closed the control connection", "unavailable")
            buf += chunk
    except TimeoutError:
        raise StreamError(f"the ingest of {exchange!r} did not answer within {timeout:g}s", "unavailable") from None
    finally:
        sock.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise StreamError(reply.get("error", "refused"), reply.get("code", "bad_request"))
    return reply


async def control_request_async(run_dir: Path, exchange: str, request: dict, timeout: float = 30.0) -> dict:
    """``control_request`` for asyncio callers (the publisher's HTTP API)."""
    import asyncio

    path = control_path(run_dir, exchange)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise StreamError(f"the ingest of {exchange!r} is not running", "not_running") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        raise StreamError(f"the ingest of {exchange!r} did not answer within {timeout:g}s", "unavailable") from None
    finally:
        writer.close()
    if not line:
        raise StreamError(f"the ingest of {exchange!r} closed the control connection", "unavailable")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise StreamError(reply.get("error", "refused"), reply.get("code", "bad_request"))
    return reply


def process_symbols(whole, ex, changes: Changes) -> tuple[str, ...]:
    """The symbols one ingest process follows: its configured ones (``ex``, a shard's config or the
    exchange's) with its saved ``changes``, less any another process owns now (the config changed
    since they were saved: pipeline/shards.py); ``whole``: the exchange's config."""
    return tuple(s for s in changes.apply(ex.symbols) if shards.owns(ex, whole, s))


def _down_entry(config, name: str, ex=None) -> dict:
    """What the files say about an exchange (or, ``ex``, one process of it) whose ingest does not answer."""
    ex = ex if ex is not None else config.exchanges[name]
    try:
        changes = load_changes(config.run_dir, ex.unit)
    except StreamError:
        changes = Changes()
    symbols = process_symbols(config.exchanges[name], ex, changes)
    changes = Changes(tuple(s for s in changes.added if s in symbols), changes.removed)
    cfg = set(ex.symbols)
    rows = [{"exchange": name, "symbol": s, "source": "config" if s in cfg else "runtime", "state": "down",
             "since_ns": 0, "added_ns": 0, "updates": 0, "trades": 0, "gaps": 0, "resyncs": 0, "rate": 0.0,
             "last_update_ns": 0, "connected": False} for s in symbols]
    return {"ok": False, "exchange": name, "configured": list(ex.symbols), "symbols": list(symbols),
            "runtime_added": list(changes.added), "runtime_removed": list(changes.removed),
            "max_symbols": ex.slots, "free": max(0, ex.slots - len(symbols)), "streams": rows}


# ------------------------------------------------------------------ one exchange, N processes

def _parts(ex, request: dict) -> list[tuple[str, dict]]:
    """(unit, request) per ingest process a request for exchange ``ex`` goes to (module docstring)."""
    units = shards.shard_configs(ex)
    if ex.processes == 1:
        return [(ex.unit, request)]
    op = request.get("op")
    if op in ("subscribe", "unsubscribe"):
        symbols = check_symbols(request.get("symbols"))
        return [(units[k].unit, {**request, "symbols": part}) for k, part in shards.split(ex, symbols).items()]
    if op in ("streams", "reset"):
        return [(sx.unit, request) for sx in units]
    return [(units[0].unit, request)]  # its refusal names the unknown op


def _merge(ex, request: dict, replies: list[dict]) -> dict:
    """One exchange's reply from its processes' replies (in shard order)."""
    if len(replies) == 1 and ex.processes == 1:
        return replies[0]
    out: dict = {"ok": True, "exchange": ex.name}
    for key in ("added", "already", "removed"):
        if any(key in r for r in replies):
            out[key] = [s for r in replies for s in r.get(key, ())]
    return out


def _refused(ex, exc: StreamError, done: list[dict]) -> StreamError:
    changed = [f"{key} {', '.join(s)}" for key in ("added", "removed")
               if (s := [x for r in done for x in r.get(key, ())])]
    if not changed:
        return exc
    return StreamError(f"{exc} (already done by other ingest processes of {ex.name}: {'; '.join(changed)})", exc.code)


def exchange_request(config, exchange: str, request: dict, timeout: float = 30.0) -> dict:
    """``control_request`` for an exchange, whatever its number of ingest processes (module docstring)."""
    ex = config.exchange(exchange)
    done: list[dict] = []
    for unit, part in _parts(ex, request):
        try:
            done.append(control_request(config.run_dir, unit, part, timeout))
        except StreamError as exc:
            raise _refused(ex, exc, done) from None
    return _merge(ex, request, done)


async def exchange_request_async(config, exchange: str, request: dict, timeout: float = 30.0) -> dict:
    """``exchange_request`` for asyncio callers (the publisher's HTTP API)."""
    ex = config.exchange(exchange)
    done: list[dict] = []
    for unit, part in _parts(ex, request):
        try:
            done.append(await control_request_async(config.run_dir, unit, part, timeout))
        except StreamError as exc:
            raise _refused(ex, exc, done) from None
    return _merge(ex, request, done)


def _process_entry(config, name: str, sx, reply: dict | StreamError) -> dict:
    if isinstance(reply, StreamError):
        entry = _down_entry(config, name, sx)
        entry["running"], entry["error"] = False, str(reply)
    else:
        entry = reply
        entry["running"] = True
    entry.pop("ok", None)
    return entry


def _exchange_entry(config, name: str, entries: list[dict]) -> dict:
    """One exchange's ``streams`` entry from its processes' (a sharded exchange's: merged, rows with
    ``shard``, ``processes`` with each one's unit and state)."""
    ex = config.exchanges[name]
    if ex.processes == 1:
        return entries[0]
    for k, e in enumerate(entries):
        for row in e["streams"]:
            row["shard"] = k
    merged = {"exchange": name, "configured": list(ex.symbols),
              "symbols": [s for e in entries for s in e["symbols"]],
              "runtime_added": [s for e in entries for s in e["runtime_added"]],
              "runtime_removed": [s for e in entries for s in e["runtime_removed"]],
              "max_symbols": sum(e["max_symbols"] for e in entries), "free": sum(e["free"] for e in entries),
              "streams": [row for e in entries for row in e["streams"]],
              "running": all(e["running"] for e in entries),
              "processes": [{"shard": k, "unit": sx.unit, "running": e["running"],
                             **({"error": e["error"]} if "error" in e else {})}
                            for k, (sx, e) in enumerate(zip(shards.shard_configs(ex), entries))]}
    errors = [e["error"] for e in entries if "error" in e]
    if errors:
        merged["error"] = "; ".join(errors)
    return merged


def streams_overview(config, timeout: float = 5.0) -> dict:
    """Every exchange's streams (the reply of each ingest's ``streams``; from the files, with
    state "down", for an ingest that does not answer): ``pipeline streams --json``, ``GET /api/streams``."""
    out = []
    for name, ex in config.exchanges.items():
        entries = []
        for sx in shards.shard_configs(ex):
            try:
                reply: dict | StreamError = control_request(config.run_dir, sx.unit, {"op": "streams"}, timeout)
            except StreamError as exc:
                reply = exc
            entries.append(_process_entry(config, name, sx, reply))
        out.append(_exchange_entry(config, name, entries))
    return {"exchanges": out}


async def streams_overview_async(config, timeout: float = 5.0) -> dict:
    """``streams_overview`` for asyncio callers (every process asked at the same time)."""
    import asyncio

    async def one(name: str, sx) -> dict:
        try:
            reply: dict | StreamError = await control_request_async(config.run_dir, sx.unit, {"op": "streams"}, timeout)
        except StreamError as exc:
            reply = exc
        return _process_entry(config, name, sx, reply)

    async def exchange(name: str, ex) -> dict:
        entries = await asyncio.gather(*(one(name, sx) for sx in shards.shard_configs(ex)))
        return _exchange_entry(config, name, list(entries))

    return {"exchanges": list(await asyncio.gather(*(exchange(n, ex) for n, ex in config.exchanges.items())))}


def reset_changes(config, exchange: str) -> dict:
    """Drop the runtime changes of ``exchange``: through its ingest when it runs (symbols go
    back to the config's at once), else by deleting the state file (per ingest process)."""
    ex = config.exchange(exchange)
    added: list[str] = []
    removed: list[str] = []
    running = True
    for sx in shards.shard_configs(ex):
        try:
            reply = control_request(config.run_dir, sx.unit, {"op": "reset"})
            added += reply["added"]
            removed += reply["removed"]
            continue
        except StreamError as exc:
            if exc.code != "not_running":
                raise
        running = False
        try:
            changes = load_changes(config.run_dir, sx.unit)
        except StreamError:  # unreadable: deleting it is the fix
            changes = Changes()
        state_path(config.run_dir, sx.unit).unlink(missing_ok=True)
        added += changes.removed
        removed += changes.added
    out = {"ok": True, "exchange": exchange, "added": added, "removed": removed}
    if not running:
        out["running"] = False
    return out


def followed_symbols(config, exchange: str) -> tuple[str, ...]:
    """The symbols ``exchange`` follows: its config's with the saved runtime changes applied
    (the config's alone when the state file cannot be read); every ingest process's."""
    ex = config.exchange(exchange)
    out: list[str] = []
    for sx in shards.shard_configs(ex):
        try:
            mine = process_symbols(ex, sx, load_changes(config.run_dir, sx.unit))
        except StreamError:
            mine = sx.symbols
        out += [s for s in mine if s not in out]
    if ex.processes > 1:  # in the config's order first, as one process would list them
        order = {s: i for i, s in enumerate(ex.symbols)}
        out.sort(key=lambda s: order.get(s, len(order)))
    return tuple(out)
