// The live page: one WebSocket to the publisher (docs/websocket.md), throttled book snapshots
// of one symbol plus its trades. Plain browser JavaScript, no build step, no dependencies.
//
// What a trader needs from it, and how each is done here:
// - Numbers that line up: every price of a symbol is shown with the same decimals, every size
//   too. The WebSocket events carry floats, so the decimals are derived from the values seen
//   (the most decimals any price or size of the symbol has had, float noise ignored) and only
//   ever grow; the tick is the largest step every price seen is a multiple of. Tick and lot size
//   from the event's `instrument` are used instead if the pipeline ever puts them there.
// - Staleness that cannot be missed: the ladder, depth chart and top-of-book figures grey out
//   and a banner says why when the WebSocket is down, the feed is not `live`, or no book change
//   has arrived for `stale_after` seconds (URL parameter, default 5). "last book update" counts
//   up once a quarter second; rates are taken over the last 5 s of wall time, so they fall to 0.
// - Book latency is "now - time_received" of a throttled snapshot: it includes the wait for the
//   exchange's throttle interval, and the page says so (and shows the part after publishing).
// - A perp's derivative ticker (mark, index, funding rate with a countdown to the next funding,
//   open interest) and its liquidations, from the `derivative_ticker` and `liquidations` channels;
//   a symbol without a ticker (spot) says so. A value the venue has not stated shows as "–".
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TAPE_ROWS = 40;
const LIQ_ROWS = 12;
const SAMPLES = 100;
const RATE_WINDOW_MS = 5000;
const LATENCY_WINDOW_MS = 10000;
const MAX_DECIMALS = 10;
const GROUP_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];  // ticks
const STALE_AFTER_S = Number(params.get("stale_after")) > 0 ? Number(params.get("stale_after")) : 5;

const state = {
  ws: null, connected: false, welcome: null, exchange: params.get("exchange"), symbol: params.get("symbol"),
  depth: Number(params.get("depth")) || 20, group: params.get("group"), retry: 500,
  lastBook: null, lastChangeAt: 0, feed: null, feedReason: "",
  bookLat: [], bookWire: [], tradeLat: [], tradeTimes: [], seqSamples: [], tape: [], ticker: null, liqs: [],
  formats: new Map(),  // "exchange symbol" -> Format
};

// ------------------------------------------------------------------ numbers

// The fewest decimals that write x exactly (up to float noise); -1 when more than any venue uses.
function decimalsOf(x) {
  if (!Number.isFinite(x)) return -1;
  const tolerance = Math.abs(x) * 1e-15;
  for (let d = 0; d <= MAX_DECIMALS; d++) {
    if (Math.abs(Number(x.toFixed(d)) - x) <= tolerance) return d;
  }
  return -1;
}

function gcd(a, b) { while (b) [a, b] = [b, a % b]; return a; }

// Decimals and tick of one symbol: from the instrument when it says, else learnt from the values.
class Format {
  constructor() { this.price = 0; this.size = 0; this.tickUnits = 0; this.fixed = false; }

  fromInstrument(inst) {
    const tick = inst && Number(inst.tick_size), lot = inst && Number(inst.lot_size);
    if (!(tick > 0) || !(lot > 0) || this.fixed) return;
    this.price = Math.max(0, decimalsOf(tick));
    this.size = Math.max(0, decimalsOf(lot));
    this.tickUnits = Math.round(tick * 10 ** this.price);
    this.fixed = true;
  }

  learn(prices, sizes) {
    if (this.fixed) return;
    for (const p of prices) {
      const d = decimalsOf(p);
      if (d > this.price) { this.tickUnits *= 10 ** (d - this.price); this.price = d; }
    }
    for (const s of sizes) this.size = Math.max(this.size, decimalsOf(s));
    const scale = 10 ** this.price;
    for (const p of prices) {
      const units = Math.round(p * scale);
      if (units > 0 && units < 2 ** 52) this.tickUnits = gcd(this.tickUnits, units);
    }
  }

  get tick() { return this.tickUnits / 10 ** this.price; }
  get decimals() { return `${this.price}/${this.size}`; }
  priceText(x) { return x.toFixed(this.price); }
  sizeText(x) { return x.toFixed(this.size); }
  priceUnits(x) { return Math.round(x * 10 ** this.price); }
  sizeUnits(x) { return Math.round(x * 10 ** this.size); }
  sizeFromUnits(n) { return (n / 10 ** this.size).toFixed(this.size); }
  priceFromUnits(n) { return (n / 10 ** this.price).toFixed(this.price); }
}

// Teach the shown symbol's format what a book or trade carried, and redraw what the change touches
// (the group choices, the tape). True when the decimals changed.
function learn(instrument, prices, sizes) {
  const f = currentFormat();
  const [tick, decimals] = [f.tick, f.decimals];
  f.fromInstrument(instrument);
  f.learn(prices, sizes);
  if (f.tick !== tick) fillGroups();
  if (f.decimals === decimals) return false;
  renderTape();
  return true;
}

function currentFormat() {
  const key = `${state.exchange} ${state.symbol}`;
  if (!state.formats.has(key)) state.formats.set(key, new Format());
  return state.formats.get(key);
}

// Levels [[price, size], ...] best first -> [[priceUnits, sizeUnits], ...] grouped to multiples of
// `groupUnits` price units (bids down, asks up, as exchanges group), in integer units so sums are exact.
function groupLevels(levels, fmt, groupUnits, side) {
  const out = [];
  for (const [p, s] of levels) {
    let units = fmt.priceUnits(p);
    if (groupUnits > 1) units = (side === "bid" ? Math.floor(units / groupUnits) : Math.ceil(units / groupUnits)) * groupUnits;
    const size = fmt.sizeUnits(s);
    if (out.length && out[out.length - 1][0] === units) out[out.length - 1][1] += size;
    else out.push([units, size]);
  }
  return out;
}

function bpsText(bps) {
  if (!Number.isFinite(bps)) return "–";
  if (bps >= 10) return bps.toFixed(1);
  if (bps >= 1) return bps.toFixed(2);
  return bps.toPrecision(3);  // BTC at one tick: 0.01 / 60000 = 0.00167 bps, never "0.00"
}

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

function ageText(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)} s ago`;
  if (s < 120) return `${Math.floor(s)} s ago`;
  return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s ago`;
}

// ------------------------------------------------------------------ connection

function setPill(el, text, cls) { el.textContent = text; el.className = "pill " + (cls || ""); }
function log(text) { $("log").textContent = new Date().toISOString().slice(11, 19) + "  " + text; }

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const token = params.get("token");
  const url = `${proto}//${location.host}/` + (token ? `?token=${encodeURIComponent(token)}` : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  setPill($("conn-state"), "connecting");
  ws.onopen = () => { state.retry = 500; state.connected = true; setPill($("conn-state"), "connected", "ok"); };
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    state.connected = false;
    setPill($("conn-state"), `disconnected ${ev.code}${ev.reason ? " " + ev.reason : ""}`, "bad");
    tick();
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 10000);
  };
}

function send(obj) { if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj)); }

function fillSelect(sel, values, chosen, labels) {
  sel.replaceChildren(...values.map((v, i) => {
    const o = document.createElement("option");
    o.value = v; o.textContent = labels ? labels[i] : v;
    return o;
  }));
  sel.value = values.includes(chosen) ? chosen : values[0];
  return sel.value;
}

function onWelcome(w) {
  state.welcome = w;
  const exchanges = Object.keys(w.exchanges);
  state.exchange = fillSelect($("exchange"), exchanges, state.exchange);
  state.symbol = fillSelect($("symbol"), w.exchanges[state.exchange].symbols, state.symbol);
  fillDepths();
  subscribe(true);
}

function fillDepths() {
  const maxDepth = state.welcome.exchanges[state.exchange].depth;
  const depths = [...new Set([5, 10, 20, 50, maxDepth])].filter((d) => d <= maxDepth).sort((a, b) => a - b);
  state.depth = Number(fillSelect($("depth"), depths.map(String), String(Math.min(state.depth, maxDepth))));
}

function subscribe(first) {
  Object.assign(state, { lastBook: null, lastChangeAt: 0, feed: null, feedReason: "", bookLat: [], bookWire: [],
                         tradeLat: [], tradeTimes: [], seqSamples: [], tape: [], subscribedAt: Date.now(),
                         ticker: null, liqs: [] });
  $("tape").tBodies[0].replaceChildren();
  $("liqs").tBodies[0].replaceChildren();
  renderTicker();
  $("ladder").tBodies[0].replaceChildren();
  setPill($("feed-state"), "feed ?");
  fillGroups();
  remember();
  if (!first) send({ op: "unsubscribe" });
  const feed = state.welcome.exchanges[state.exchange];
  // the whole view the publisher has: the depth chart and price grouping use levels below the ladder's
  send({ op: "subscribe", id: "page", exchange: state.exchange, symbols: [state.symbol],
         channels: ["trades", "book", "derivative_ticker", "liquidations"], depth: feed.depth, mode: "snapshots",
         throttle_ms: feed.throttle_ms });
  tick();
}

function remember() {  // the URL names what is shown, so it can be bookmarked or shared
  const q = new URLSearchParams(location.search);
  q.set("exchange", state.exchange); q.set("symbol", state.symbol); q.set("depth", state.depth);
  if (state.group) q.set("group", state.group); else q.delete("group");
  history.replaceState(null, "", "?" + q.toString());
}

function onFrame(m) {
  switch (m.kind) {
    case "welcome": return onWelcome(m);
    case "order_book_l2": return onBook(m);
    case "trade": return onTrade(m);
    case "derivative_ticker": return onTicker(m);
    case "liquidation": return onLiquidation(m);
    case "status": return onStatus(m);
    case "error": return log("error: " + m.message);
    case "subscribed": return log(`subscribed ${m.exchange} ${m.symbols.join(",")} depth ${m.depth}, ${m.mode}`);
    default: return undefined;
  }
}

function onStatus(m) {
  log(`${m.exchange} ${m.symbol}: ${m.state} (${m.reason})`);
  if (m.exchange !== state.exchange || m.symbol !== state.symbol) return;
  state.feedReason = m.reason;
  setFeed(m.state);
  tick();
}

function setFeed(s) {
  if (s !== state.feed && s === "live") state.feedReason = "";
  state.feed = s;
  setPill($("feed-state"), "feed " + s, s === "live" ? "ok" : "bad");
}

// ------------------------------------------------------------------ book

function onBook(m) {
  if (m.exchange !== state.exchange || m.symbol !== state.symbol) return;
  const now = Date.now();
  const prev = state.lastBook;
  // a change of the market; a snapshot that only says the book went stale or is syncing is not one
  const changed = m.state === "live" && (!prev || prev.seq !== m.seq || prev.epoch !== m.epoch);
  if (changed) {
    state.lastChangeAt = now;
    push(state.bookLat, [now, now - isoMs(m.time_received)], SAMPLES);
    push(state.bookWire, [now, now - isoMs(m.time_published)], SAMPLES);
  }
  // the feed's own update rate: seq counts every change of the view, even between throttled snapshots
  if (prev && prev.epoch !== m.epoch) state.seqSamples = [];
  push(state.seqSamples, [now, m.seq], 200);
  setFeed(m.state);
  learn(m.instrument, [...m.bids.map((l) => l[0]), ...m.asks.map((l) => l[0])],
        [...m.bids.map((l) => l[1]), ...m.asks.map((l) => l[1])]);
  state.lastBook = m;
  renderBook();
  tick();
}

// "" (the first option) is the tick itself, no grouping; the others are multiples of the tick as
// price text. Kept as chosen while the tick estimate moves, and in the URL.
function fillGroups() {
  const f = currentFormat();
  const values = [""], labels = [f.tickUnits ? `${f.priceFromUnits(f.tickUnits)} (tick)` : "tick"];
  if (f.tickUnits) {
    for (const k of GROUP_STEPS.slice(1)) values.push(f.priceFromUnits(k * f.tickUnits));
    labels.push(...values.slice(1));
  }
  const chosen = fillSelect($("group"), values, state.group ?? "", labels);
  if (f.tickUnits) state.group = chosen;  // before the first book, a group from the URL waits for the tick
}

function groupUnits(f) {
  const g = Number(state.group);
  return g > 0 ? Math.max(1, f.priceUnits(g)) : 1;
}

function cell(cls, text, barPct) {
  const td = document.createElement("td");
  td.className = cls;
  if (barPct !== undefined) {
    const bar = document.createElement("i");
    bar.style.width = barPct.toFixed(1) + "%";
    const em = document.createElement("em");
    em.textContent = text;
    td.append(bar, em);
  } else td.textContent = text;
  return td;
}

function renderBook() {
  const m = state.lastBook;
  if (!m) return;
  const f = currentFormat();
  const g = groupUnits(f);
  // grouped: when the view is full, its last group may go on below the view's last level, so it is left out
  const grouped = (levels, side) => {
    const out = groupLevels(levels, f, g, side);
    if (g > 1 && levels.length >= m.depth) out.pop();
    return out.slice(0, state.depth);
  };
  const bids = grouped(m.bids, "bid"), asks = grouped(m.asks, "ask");
  const cum = (levels) => { let t = 0; return levels.map(([, s]) => (t += s)); };
  const bidCum = cum(bids), askCum = cum(asks);
  const maxSize = Math.max(1, ...bids.map((l) => l[1]), ...asks.map((l) => l[1]));
  const maxCum = Math.max(1, bidCum.at(-1) || 0, askCum.at(-1) || 0);
  const line = (side, [p, s], total) => {
    const tr = document.createElement("tr");
    tr.className = side;
    tr.append(cell("price", f.priceFromUnits(p)), cell("size", f.sizeFromUnits(s), (100 * s) / maxSize),
              cell("total", f.sizeFromUnits(total), (100 * total) / maxCum));
    return tr;
  };
  const rows = [];
  for (let i = asks.length - 1; i >= 0; i--) rows.push(line("ask", asks[i], askCum[i]));
  const mid = document.createElement("tr");
  mid.className = "spread";
  const td = document.createElement("td"); td.colSpan = 3; td.textContent = spreadText(m, f);
  mid.append(td);
  rows.push(mid);
  for (let i = 0; i < bids.length; i++) rows.push(line("bid", bids[i], bidCum[i]));
  const body = $("ladder").tBodies[0];
  body.replaceChildren(...rows);
  body.dataset.seq = m.seq;
  body.dataset.epoch = m.epoch;
  const top = (l) => (l ? `${f.priceText(l[0])} × ${f.sizeText(l[1])}` : "–");
  $("best-bid").textContent = top(m.bids[0]);
  $("best-ask").textContent = top(m.asks[0]);
  $("mid").textContent = m.bids.length && m.asks.length ? ((m.bids[0][0] + m.asks[0][0]) / 2).toFixed(f.price + 1) : "–";
  $("spread").textContent = spreadText(m, f);
  $("seq").textContent = m.seq;
  const tickText = f.tickUnits ? f.priceFromUnits(f.tickUnits) : "?";
  $("format").textContent = `price ${f.price} dp · size ${f.size} dp · tick ${tickText}${f.fixed ? "" : " (from prices seen)"}`
    + (g > 1 ? ` · grouped by ${f.priceFromUnits(g)}` : "");
  drawDepth(m, f);
}

function spreadText(m, f) {
  if (!m.bids.length || !m.asks.length) return "–";
  const bid = m.bids[0][0], ask = m.asks[0][0];
  const units = f.priceUnits(ask) - f.priceUnits(bid);
  const ticks = f.tickUnits ? units / f.tickUnits : NaN;
  const bps = ((ask - bid) / ((ask + bid) / 2)) * 1e4;
  const tickText = Number.isInteger(ticks) ? ` · ${ticks} tick${ticks === 1 ? "" : "s"}` : "";
  return `${f.priceFromUnits(units)}${tickText} · ${bpsText(bps)} bps`;
}

// Cumulative bids (left) and asks (right) around the mid, out to the nearer of the two far ends.
function drawDepth(m, f) {
  const canvas = $("depth-chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px ui-monospace, Menlo, Consolas, 'DejaVu Sans Mono', monospace";
  ctx.fillStyle = "#7d8a96";
  if (!m || !m.bids.length || !m.asks.length) { ctx.fillText("no book", 10, 20); $("depth-note").textContent = ""; return; }
  const bb = m.bids[0][0], ba = m.asks[0][0], mid = (bb + ba) / 2;
  let reach = Math.min(mid - m.bids.at(-1)[0], m.asks.at(-1)[0] - mid);
  if (!(reach > 0)) reach = (ba - bb) || mid * 1e-4;
  const lo = mid - reach, hi = mid + reach;
  const pad = { l: 8, r: 8, t: 18, b: 20 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  const x = (p) => pad.l + ((p - lo) / (hi - lo)) * pw;
  const steps = (levels, inRange) => {
    const out = []; let t = 0;
    for (const [p, s] of levels) { if (!inRange(p)) break; t += s; out.push([p, t]); }
    return out;
  };
  const bids = steps(m.bids, (p) => p >= lo), asks = steps(m.asks, (p) => p <= hi);
  const yMax = Math.max(bids.at(-1)?.[1] || 0, asks.at(-1)?.[1] || 0) * 1.1 || 1;
  const y = (v) => pad.t + ph - (v / yMax) * ph;
  const area = (points, edge, line, fill) => {
    ctx.beginPath();
    ctx.moveTo(x(points[0][0]), y(0));
    let prev = 0;
    for (const [p, t] of points) { ctx.lineTo(x(p), y(prev)); ctx.lineTo(x(p), y(t)); prev = t; }
    ctx.lineTo(x(edge), y(prev));
    ctx.lineTo(x(edge), y(0));
    ctx.closePath();
    ctx.fillStyle = fill; ctx.fill();
    ctx.strokeStyle = line; ctx.lineWidth = 1.5; ctx.stroke();
  };
  if (bids.length) area(bids, lo, "#2fbf71", "rgba(47,191,113,.25)");
  if (asks.length) area(asks, hi, "#e5534b", "rgba(229,83,75,.25)");
  ctx.strokeStyle = "#7d8a96"; ctx.lineWidth = 1; ctx.setLineDash([3, 3]);
  ctx.beginPath(); ctx.moveTo(x(mid), pad.t - 4); ctx.lineTo(x(mid), pad.t + ph); ctx.stroke();
  ctx.setLineDash([]);
  ctx.beginPath(); ctx.moveTo(pad.l, pad.t + ph + 0.5); ctx.lineTo(pad.l + pw, pad.t + ph + 0.5); ctx.stroke();
  ctx.fillStyle = "#7d8a96";
  ctx.textBaseline = "bottom";
  ctx.textAlign = "left"; ctx.fillText(f.priceText(lo), pad.l, h - 2);
  ctx.textAlign = "center"; ctx.fillText(`mid ${mid.toFixed(f.price + 1)}`, x(mid), h - 2);
  ctx.textAlign = "right"; ctx.fillText(f.priceText(hi), pad.l + pw, h - 2);
  ctx.textBaseline = "top"; ctx.textAlign = "left";
  ctx.fillText(`${f.sizeText(yMax / 1.1)} cumulative`, pad.l, 2);
  $("depth-note").textContent = `±${bpsText((reach / mid) * 1e4)} bps`;
}

// ------------------------------------------------------------------ trades

function onTrade(m) {
  if (m.exchange !== state.exchange || m.symbol !== state.symbol) return;
  const now = Date.now();
  push(state.tradeLat, [now, now - isoMs(m.time_received)], SAMPLES);
  push(state.tradeTimes, now, 2000);
  state.tape.unshift(m);
  if (state.tape.length > TAPE_ROWS) state.tape.pop();
  if (learn(m.instrument, [m.price], [m.amount])) return;  // the tape was drawn again, this trade with it
  const body = $("tape").tBodies[0];
  body.prepend(tradeRow(m, currentFormat()));
  while (body.rows.length > TAPE_ROWS) body.deleteRow(-1);
}

function tradeRow(m, f) {
  const tr = document.createElement("tr");
  tr.className = "trade";
  tr.append(cell("time", (m.time_exchange || m.time_received || "").slice(11, 23)), cell("price", f.priceText(m.price)),
            cell("amount", f.sizeText(m.amount)), cell("side " + m.side, m.side));
  return tr;
}

// the whole tape again, when the symbol's decimals changed (every row keeps the same ones)
function renderTape() {
  const f = currentFormat();
  $("tape").tBodies[0].replaceChildren(...state.tape.map((m) => tradeRow(m, f)));
}

// ------------------------------------------------------------------ perp: ticker and liquidations

function onTicker(m) {
  if (m.exchange !== state.exchange || m.symbol !== state.symbol) return;
  state.ticker = m;  // its prices are not learnt: a mark or index finer than the tick must not widen the ladder
  renderTicker();
}

function renderTicker() {
  const t = state.ticker, f = currentFormat();
  $("perp-panel").classList.toggle("none", !t);
  if (!t) { $("perp-note").textContent = ""; return; }
  const price = (x) => (x === null || x === undefined ? "–" : x.toFixed(Math.max(f.price, decimalsOf(x))));
  $("mark").textContent = price(t.mark_price);
  $("index").textContent = price(t.index_price);
  $("last").textContent = price(t.last_price);
  const basis = t.mark_price && t.index_price ? ((t.mark_price - t.index_price) / t.index_price) * 1e4 : NaN;
  $("basis").textContent = Number.isFinite(basis) ? basis.toFixed(2) : "–";
  const rate = t.funding_rate;
  const fund = $("funding");
  fund.textContent = rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(4)}%`
    + (t.predicted_funding_rate === null || t.predicted_funding_rate === undefined ? ""
      : ` (next ${(t.predicted_funding_rate * 100).toFixed(4)}%)`);
  fund.className = rate > 0 ? "pos" : rate < 0 ? "neg" : "";
  $("oi").textContent = t.open_interest === null || t.open_interest === undefined ? "–" : String(t.open_interest);
  $("perp-note").textContent = `updated ${(t.time_exchange || t.time_received || "").slice(11, 19)} UTC`;
  renderCountdown(Date.now());
}

// "7h 59m 58s" to the next funding; counted down by the clock, not by ticker updates
function renderCountdown(now) {
  const t = state.ticker;
  const at = t && t.funding_timestamp ? isoMs(t.funding_timestamp) : NaN;
  if (!Number.isFinite(at)) { $("countdown").textContent = "–"; return; }
  const s = Math.max(0, Math.floor((at - now) / 1000));
  const h = Math.floor(s / 3600), mi = Math.floor((s % 3600) / 60);
  $("countdown").textContent = `${h}h ${String(mi).padStart(2, "0")}m ${String(s % 60).padStart(2, "0")}s`;
  $("countdown").title = t.funding_timestamp;
}

function onLiquidation(m) {
  if (m.exchange !== state.exchange || m.symbol !== state.symbol) return;
  state.liqs.unshift(m);
  if (state.liqs.length > LIQ_ROWS) state.liqs.pop();
  learn(m.instrument, [m.price], [m.amount]);
  const f = currentFormat();
  $("liqs").tBodies[0].replaceChildren(...state.liqs.map((x) => {
    const tr = document.createElement("tr");
    tr.className = "liq";
    tr.append(cell("time", (x.time_exchange || x.time_received || "").slice(11, 23)), cell("price", f.priceText(x.price)),
              cell("amount", f.sizeText(x.amount)), cell("side " + x.side, x.side));
    return tr;
  }));
}

// ------------------------------------------------------------------ the clock: staleness and rates

function bookRate(now) {
  const w = state.seqSamples;
  if (!w.length) return NaN;
  // seq at the start of the window: the last sample at or before it (the view did not change after it)
  let start = null;
  for (const s of w) { if (s[0] <= now - RATE_WINDOW_MS) start = s; else break; }
  if (start === null) {  // watched for less than the window
    const span = now - w[0][0];
    return span >= 1000 ? (w.at(-1)[1] - w[0][1]) / (span / 1000) : NaN;
  }
  return (w.at(-1)[1] - start[1]) / (RATE_WINDOW_MS / 1000);
}

function recentMedian(samples, now) {
  return median(samples.filter(([t]) => now - t <= LATENCY_WINDOW_MS).map(([, v]) => v));
}

function tick() {
  const now = Date.now();
  const age = state.lastChangeAt ? now - state.lastChangeAt : NaN;
  let why = "";
  if (!state.connected) why = "DISCONNECTED from the publisher";
  else if (!state.lastBook) why = "waiting for the first book";
  else if (state.feed !== "live") {
    const reason = state.feedReason && state.feedReason !== `book ${state.feed}` ? ` (${state.feedReason})` : "";
    why = `FEED ${String(state.feed).toUpperCase()}${reason}`;
  }
  else if (age > STALE_AFTER_S * 1000) why = `NO BOOK UPDATE for ${Math.floor(age / 1000)} s`;
  const stale = why !== "";
  document.body.classList.toggle("stale", stale);
  $("banner").textContent = stale ? why + (state.lastChangeAt ? ` · last book update ${ageText(age)} · the book shown may be out of date` : "") : "";
  $("age").textContent = state.lastChangeAt ? ageText(age) : "–";

  $("rate").textContent = fmt(bookRate(now), 0);
  const recent = state.tradeTimes.filter((t) => now - t <= RATE_WINDOW_MS).length;
  const watched = Math.min(RATE_WINDOW_MS, now - (state.subscribedAt || now)) / 1000;
  $("trade-rate").textContent = watched >= 0.5 ? fmt(recent / watched, 1) : "–";

  renderCountdown(now);
  const throttle = state.welcome ? state.welcome.exchanges[state.exchange].throttle_ms : null;
  $("latency").textContent = `${fmt(recentMedian(state.bookLat, now), 1)} / ${fmt(recentMedian(state.tradeLat, now), 1)}`;
  $("latency-note").textContent = throttle === null ? ""
    : `book: ingest receive → here, incl. the ${throttle} ms throttle (after publish: ${fmt(recentMedian(state.bookWire, now), 1)})`;
}

// ------------------------------------------------------------------ controls

$("exchange").onchange = (e) => {
  state.exchange = e.target.value;
  state.symbol = fillSelect($("symbol"), state.welcome.exchanges[state.exchange].symbols, null);
  state.group = null;
  fillDepths();
  subscribe(false);
};
$("symbol").onchange = (e) => { state.symbol = e.target.value; state.group = null; subscribe(false); };
$("depth").onchange = (e) => { state.depth = Number(e.target.value); remember(); renderBook(); };
$("group").onchange = (e) => { state.group = e.target.value; remember(); renderBook(); };
window.addEventListener("resize", () => { if (state.lastBook) drawDepth(state.lastBook, currentFormat()); });
if (params.get("token")) {  // /metrics and /stats take the same token as the WebSocket
  for (const a of document.querySelectorAll("footer a")) a.search = "?token=" + encodeURIComponent(params.get("token"));
}
// ------------------------------------------------------------------ streams panel
// GET/POST /api/streams and DELETE /api/streams/EX/SYM (docs/streams.md): the ingests' one control API.

const STREAMS_EVERY_MS = 2000;

async function api(method, path, body) {
  const headers = {"Content-Type": "application/json"};
  if (params.get("token")) headers.Authorization = "Bearer " + params.get("token");
  const r = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  let data = {};
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function streamsError(text) { $("streams-error").textContent = text || ""; }

function streamRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.key = r.exchange + "/" + r.symbol;
  const since = r.since_ns ? new Date(r.since_ns / 1e6).toISOString().slice(0, 19).replace("T", " ") : "–";
  const last = r.last_update_ns ? ageText(Date.now() - r.last_update_ns / 1e6) : "–";
  const cells = [[r.exchange, "sym"], [r.symbol, "sym"], [r.source, "sym"], [r.state, "sym " + r.state], [since, ""],
                 [String(r.updates), ""], [String(r.trades), ""], [String(r.gaps), ""], [r.rate.toFixed(1), ""], [last, ""]];
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    td.className = cls;
    tr.appendChild(td);
  }
  const td = document.createElement("td");
  if (r.state !== "removed" && r.state !== "down") {
    const b = document.createElement("button");
    b.textContent = "remove";
    b.className = "remove";
    b.onclick = () => removeStream(r.exchange, r.symbol);
    td.appendChild(b);
  }
  tr.appendChild(td);
  return tr;
}

async function refreshStreams() {
  let data;
  try {
    data = await api("GET", "/api/streams");
  } catch (e) {
    $("streams-note").textContent = "unavailable: " + e.message;
    return;
  }
  const rows = data.exchanges.flatMap((e) => e.streams);
  $("streams").tBodies[0].replaceChildren(...rows.map(streamRow));
  const names = data.exchanges.map((e) => e.exchange);
  const sel = $("streams-exchange");
  if ([...sel.options].map((o) => o.value).join() !== names.join()) fillSelect(sel, names, sel.value || null);
  $("streams-note").textContent = data.exchanges.map((e) =>
    `${e.exchange}: ${e.symbols.length}/${e.max_symbols}` + (e.running ? "" : " (ingest not running)")).join(" · ");
}

async function removeStream(exchange, symbol) {
  streamsError("");
  try {
    await api("DELETE", `/api/streams/${encodeURIComponent(exchange)}/${encodeURIComponent(symbol)}`);
    log(`unsubscribed ${exchange} ${symbol}`);
  } catch (e) {
    streamsError(`remove ${exchange} ${symbol}: ${e.message}`);
  }
  refreshStreams();
}

$("streams-add").onsubmit = async (ev) => {
  ev.preventDefault();
  const exchange = $("streams-exchange").value;
  const symbols = $("streams-symbol").value.split(/[\s,]+/).filter((s) => s);
  if (!symbols.length) { streamsError("type a symbol first"); return; }
  streamsError("");
  $("streams-submit").disabled = true;
  try {
    const r = await api("POST", "/api/streams", {exchange, symbols});
    log(`subscribed ${exchange} ${r.added.join(", ") || "(already followed)"}`);
    $("streams-symbol").value = "";
  } catch (e) {
    streamsError(`add ${symbols.join(", ")} on ${exchange}: ${e.message}`);
  } finally {
    $("streams-submit").disabled = false;
  }
  refreshStreams();
};

setInterval(refreshStreams, STREAMS_EVERY_MS);
refreshStreams();
setInterval(tick, 250);
connect();
