// The live page: one WebSocket to the publisher (docs/websocket.md), throttled book snapshots
// of one symbol plus its trades. Plain browser JavaScript, no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TAPE_ROWS = 40;
const SAMPLES = 100;

const state = {
  ws: null, welcome: null, exchange: params.get("exchange"), symbol: params.get("symbol"),
  depth: Number(params.get("depth")) || 20, retry: 500, lastBook: null,
  bookLat: [], tradeLat: [], tradeTimes: [], rateWindow: [],
};

// "2024-05-01T12:00:00.123456Z" -> ms since the epoch, keeping the microseconds
function isoMs(s) {
  if (!s) return NaN;
  const base = Date.parse(s.slice(0, 19) + "Z");
  const frac = s.length > 20 ? Number("0." + s.slice(20, -1)) * 1000 : 0;
  return base + frac;
}

function median(xs) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

function push(list, x, max) { list.push(x); if (list.length > max) list.shift(); }

function fmt(x, digits) {
  if (x === undefined || x === null || Number.isNaN(x)) return "–";
  return digits === undefined ? String(x) : x.toFixed(digits);
}

function setPill(el, text, cls) { el.textContent = text; el.className = "pill " + (cls || ""); }
function log(text) { $("log").textContent = new Date().toISOString().slice(11, 19) + "  " + text; }

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const token = params.get("token");
  const url = `${proto}//${location.host}/` + (token ? `?token=${encodeURIComponent(token)}` : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  setPill($("conn-state"), "connecting");
  ws.onopen = () => { state.retry = 500; setPill($("conn-state"), "connected", "ok"); };
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    setPill($("conn-state"), `disconnected ${ev.code}${ev.reason ? " " + ev.reason : ""}`, "bad");
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 10000);
  };
}

function send(obj) { if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj)); }

function fillSelect(sel, values, chosen) {
  sel.replaceChildren(...values.map((v) => { const o = document.createElement("option"); o.textContent = v; return o; }));
  sel.value = values.includes(chosen) ? chosen : values[0];
  return sel.value;
}

function onWelcome(w) {
  state.welcome = w;
  const exchanges = Object.keys(w.exchanges);
  state.exchange = fillSelect($("exchange"), exchanges, state.exchange);
  state.symbol = fillSelect($("symbol"), w.exchanges[state.exchange].symbols, state.symbol);
  const maxDepth = w.exchanges[state.exchange].depth;
  const depths = [5, 10, 20, 50].filter((d) => d <= maxDepth);
  state.depth = Number(fillSelect($("depth"), depths.map(String), String(Math.min(state.depth, maxDepth))));
  subscribe(true);
}

function subscribe(first) {
  state.lastBook = null; state.bookLat = []; state.tradeLat = []; state.tradeTimes = []; state.rateWindow = [];
  $("tape").tBodies[0].replaceChildren();
  $("ladder").tBodies[0].replaceChildren();
  if (!first) send({ op: "unsubscribe" });
  const feed = state.welcome.exchanges[state.exchange];
  send({ op: "subscribe", id: "page", exchange: state.exchange, symbols: [state.symbol],
         channels: ["trades", "book"], depth: state.depth, mode: "snapshots", throttle_ms: feed.throttle_ms });
}

function onFrame(m) {
  switch (m.kind) {
    case "welcome": return onWelcome(m);
    case "order_book_l2": return onBook(m);
    case "trade": return onTrade(m);
    case "status": log(`${m.exchange} ${m.symbol}: ${m.state} (${m.reason})`); return setFeed(m.state);
    case "error": return log("error: " + m.message);
    case "subscribed": return log(`subscribed ${m.exchange} ${m.symbols.join(",")} depth ${m.depth}, ${m.mode}`);
    default: return undefined;
  }
}

function setFeed(s) { setPill($("feed-state"), "feed " + s, s === "live" ? "ok" : "bad"); }

function onBook(m) {
  if (m.exchange !== state.exchange || m.symbol !== state.symbol) return;
  const now = Date.now();
  push(state.bookLat, now - isoMs(m.time_received), SAMPLES);
  // update rate of the feed itself: seq counts every change of the view, even between throttled snapshots
  push(state.rateWindow, [now, m.seq, m.epoch], 50);
  setFeed(m.state);
  state.lastBook = m;
  renderBook(m);
  renderStats();
}

function row(cls, price, size, maxSize) {
  const tr = document.createElement("tr");
  tr.className = cls;
  const p = document.createElement("td"); p.className = "price"; p.textContent = price;
  const s = document.createElement("td"); s.className = "size";
  const bar = document.createElement("i"); bar.style.width = (maxSize > 0 ? (100 * size) / maxSize : 0).toFixed(1) + "%";
  const txt = document.createElement("em"); txt.textContent = size;
  s.append(bar, txt);
  tr.append(p, s);
  return tr;
}

function renderBook(m) {
  const maxSize = Math.max(0, ...m.bids.map((l) => l[1]), ...m.asks.map((l) => l[1]));
  const rows = [];
  for (let i = m.asks.length - 1; i >= 0; i--) rows.push(row("ask", m.asks[i][0], m.asks[i][1], maxSize));
  const mid = document.createElement("tr");
  mid.className = "spread";
  const td = document.createElement("td"); td.colSpan = 2; td.textContent = spreadText(m);
  mid.append(td);
  rows.push(mid);
  for (const [p, s] of m.bids) rows.push(row("bid", p, s, maxSize));
  const body = $("ladder").tBodies[0];
  body.replaceChildren(...rows);
  body.dataset.seq = m.seq;
  $("best-bid").textContent = m.bids.length ? `${m.bids[0][0]} × ${m.bids[0][1]}` : "–";
  $("best-ask").textContent = m.asks.length ? `${m.asks[0][0]} × ${m.asks[0][1]}` : "–";
  $("spread").textContent = spreadText(m);
  $("seq").textContent = m.seq;
}

function spreadText(m) {
  if (!m.bids.length || !m.asks.length) return "–";
  const bid = m.bids[0][0], ask = m.asks[0][0], spread = ask - bid, mid = (ask + bid) / 2;
  return `${+spread.toPrecision(8)} (${((spread / mid) * 1e4).toFixed(2)} bps)`;
}

function onTrade(m) {
  if (m.exchange !== state.exchange || m.symbol !== state.symbol) return;
  const now = Date.now();
  push(state.tradeLat, now - isoMs(m.time_received), SAMPLES);
  push(state.tradeTimes, now, 500);
  const tr = document.createElement("tr");
  tr.className = "trade";
  const cells = [(m.time_exchange || m.time_received || "").slice(11, 23), m.side, m.price, m.amount];
  for (const [i, v] of cells.entries()) {
    const td = document.createElement("td");
    td.textContent = v;
    if (i === 1) td.className = m.side;
    tr.append(td);
  }
  const body = $("tape").tBodies[0];
  body.prepend(tr);
  while (body.rows.length > TAPE_ROWS) body.deleteRow(-1);
  renderStats();
}

function renderStats() {
  const w = state.rateWindow;
  let rate = NaN;
  if (w.length >= 2 && w[0][2] === w[w.length - 1][2]) {
    const dt = (w[w.length - 1][0] - w[0][0]) / 1000;
    if (dt > 0) rate = (w[w.length - 1][1] - w[0][1]) / dt;
  }
  $("rate").textContent = fmt(rate, 0);
  const now = Date.now();
  const recent = state.tradeTimes.filter((t) => now - t <= 5000);
  const span = Math.min(5, (now - (state.tradeTimes[0] ?? now)) / 1000);  // seconds watched, up to 5
  $("trade-rate").textContent = span >= 0.5 ? fmt(recent.length / span, 1) : "–";
  $("latency").textContent = `${fmt(median(state.bookLat), 1)} / ${fmt(median(state.tradeLat), 1)}`;
}

$("exchange").onchange = (e) => {
  state.exchange = e.target.value;
  state.symbol = fillSelect($("symbol"), state.welcome.exchanges[state.exchange].symbols, null);
  subscribe(false);
};
$("symbol").onchange = (e) => { state.symbol = e.target.value; subscribe(false); };
$("depth").onchange = (e) => { state.depth = Number(e.target.value); subscribe(false); };
if (params.get("token")) {  // /metrics and /stats take the same token as the WebSocket
  for (const a of document.querySelectorAll("footer a")) a.search = "?token=" + encodeURIComponent(params.get("token"));
}
setInterval(renderStats, 1000);
connect();
