"""The live page (publisher/static) in headless Chromium, against sim -> ingest -> publisher.

What a trader reads off the page is checked on the page itself, through the DevTools
protocol: the ladder's numbers equal `pipeline book --json` taken while the sim is paused
(so both are of the same moment), every price has the symbol's decimals and the decimal
points line up, a paused or stopped market greys the book out with its age counting up, and
a narrow window puts the trade tape below the ladder.  Each test saves its screenshots into
its own output folder (``tmp_path``).
"""

from __future__ import annotations

import json
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import (CHROMIUM, PIPELINE, Procs, chromium, eventually, feeds, free_port, short_tmpdir, sim_fault,
                     start_publisher, start_sim, write_config)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
DEPTH = 10  # ladder rows per side
VIEW_DEPTH = 20  # the shared-memory view (write_config's depth), so the page's subscription
STALE_AFTER_S = 2  # the page's `stale_after`: no book change for this long greys it out

# What the page shows, read from the DOM as a person reads it.
PAGE_STATE_JS = """JSON.stringify((() => {
  const text = (id) => document.getElementById(id).textContent;
  const rows = (cls) => [...document.querySelectorAll('#ladder tr.' + cls)].map(
      (tr) => [...tr.cells].map((td) => td.textContent));
  const body = document.querySelector('#ladder tbody');
  return {
    conn: text('conn-state'), feed: text('feed-state'), stale: document.body.classList.contains('stale'),
    banner: text('banner'), age: text('age'), rate: text('rate'), trade_rate: text('trade-rate'),
    latency: text('latency'), latency_note: text('latency-note'), spread: text('spread'), format: text('format'),
    mid: text('mid'), symbol: document.getElementById('symbol').value,
    seq: +(body.dataset.seq || 0), epoch: +(body.dataset.epoch || 0),
    asks: rows('ask'), bids: rows('bid'),
    trades: [...document.querySelectorAll('#tape tr.trade')].map((tr) => [...tr.cells].map((td) => td.textContent)),
  };
})())"""

# Where each ladder column's decimal point is drawn (x of the '.' glyph), per column.
DECIMAL_POINTS_JS = """JSON.stringify(['price', 'size', 'total'].map((cls) =>
  [...document.querySelectorAll('#ladder td.' + cls)].map((td) => {
    const node = [...td.querySelectorAll('*'), td].map((e) => [...e.childNodes]).flat()
                   .find((n) => n.nodeType === 3 && n.textContent.includes('.'));
    const r = document.createRange();
    const i = node.textContent.indexOf('.');
    r.setStart(node, i); r.setEnd(node, i + 1);
    return r.getBoundingClientRect().left;
  })))"""

# Painted pixels of the depth chart: green (bids) and red (asks), left and right of the middle.
DEPTH_PIXELS_JS = """JSON.stringify((() => {
  const c = document.getElementById('depth-chart');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const n = {bid_left: 0, bid_right: 0, ask_left: 0, ask_right: 0};
  for (let i = 0; i < d.length; i += 4) {
    const x = (i / 4) % c.width, left = x < c.width / 2;
    if (d[i + 1] > 150 && d[i] < 100) n[left ? 'bid_left' : 'bid_right']++;
    if (d[i] > 180 && d[i + 1] < 120) n[left ? 'ask_left' : 'ask_right']++;
  }
  return n;
})())"""


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, ",".join(SYMBOLS), rate=400)
        ws_port = free_port()
        config = write_config(workdir, sim_port, SYMBOLS, extra=f"l2_throttle_ms = 100\n[publisher]\nport = {ws_port}\n")
        procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(config).values()), 30, 0.2, "books live")
        assert start_publisher(procs, config) == ws_port
        with chromium(workdir) as browser:
            yield {"config": config, "port": ws_port, "sim_port": sim_port, "procs": procs, "browser": browser}
    finally:
        procs.stop_all()


@pytest.fixture
def page(stack):
    """A fresh tab on the page; ``page.open(symbol)`` loads it, ``page.state()`` reads it."""
    browser = stack["browser"]

    class Page:
        def open(self, symbol: str = "BTCUSDT") -> None:
            browser.open(f"http://127.0.0.1:{stack['port']}/?symbol={symbol}&depth={DEPTH}&stale_after={STALE_AFTER_S}")
            browser.set_viewport(1280, 900)

        def state(self) -> dict | None:
            return json.loads(browser.evaluate(PAGE_STATE_JS) or "null")

        def js(self, expression: str):
            return browser.evaluate(expression)

        def wait_live(self, what: str = "a live ladder and trades") -> dict:
            def live():
                s = self.state()
                ok = (s and s["conn"] == "connected" and s["feed"] == "feed live" and not s["stale"]
                      and len(s["asks"]) == DEPTH and len(s["bids"]) == DEPTH and len(s["trades"]) >= 3
                      and s["rate"] not in ("–", "0"))
                return s if ok else None
            return eventually(live, 30, 0.2, what)

        def screenshot(self, path: Path) -> Path:
            return browser.screenshot(path)

    yield Page()
    browser.close_page()


def pipeline_book(config: Path, symbol: str) -> dict:
    """`pipeline book sim SYMBOL --json`: the whole view in shared memory."""
    out = subprocess.run(PIPELINE + ["--config", str(config), "book", "sim", symbol, "--json"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


# ------------------------------------------------------------------------------ tests

def test_number_helpers_ignore_float_noise_and_keep_bps_non_zero(page):
    """The page's pure helpers, run in the browser: decimals, tick, grouping, bps."""
    page.open("BTCUSDT")
    eventually(lambda: page.js("typeof Format") == "function", 10, 0.1, "app.js loaded")
    got = json.loads(page.js("""JSON.stringify((() => {
      const f = new Format();
      f.learn([100.05, 100.1, 100.15, 99.95], [0.5, 1.25, 3]);
      const noisy = new Format();
      noisy.learn([6012345 * 0.01, 0.1 + 0.2], [1 / 3]);
      return {
        decimals: [decimalsOf(60123.450000000004), decimalsOf(1e-8), decimalsOf(0.1 + 0.2), decimalsOf(1 / 3),
                   decimalsOf(42), decimalsOf(60000.1)],
        f: [f.price, f.size, f.tick, f.priceText(100.1), f.sizeText(3)],
        noisy: [noisy.price, noisy.size],
        grouped_bids: groupLevels([[100.15, 1], [100.1, 2], [100.05, 0.25], [99.95, 1]], f, 10, "bid"),
        grouped_asks: groupLevels([[100.05, 1], [100.1, 2], [100.15, 0.25]], f, 10, "ask"),
        bps: [bpsText(0.01 / 60000 * 1e4), bpsText(1.234), bpsText(12.34)],
      };
    })())"""))
    assert got["decimals"] == [2, 8, 1, -1, 0, 1]
    assert got["f"] == [2, 2, 0.05, "100.10", "3.00"]
    assert got["noisy"] == [2, 0]  # float noise and 1/3 teach nothing
    # price units of 0.01: bids down to 0.10 multiples, asks up; sizes in units of 0.01, summed exactly
    assert got["grouped_bids"] == [[10010, 300], [10000, 25], [9990, 100]]
    assert got["grouped_asks"] == [[10010, 300], [10020, 25]]
    assert got["bps"] == ["0.00167", "1.23", "12.3"]


def test_trades_before_the_first_book_are_redrawn_with_the_books_decimals_and_groups_offered(page):
    """Trades can come first (the default subscription's, before the page's own snapshot): the
    tape is drawn again when the book teaches more decimals, and the group choices appear."""
    page.open("BTCUSDT")
    eventually(lambda: page.js("state.welcome !== null"), 10, 0.1, "the welcome")
    got = json.loads(page.js("""JSON.stringify((() => {
      state.symbol = 'SYNTH';  // no real events for it: only the frames below
      subscribe(false);
      const t = '2024-05-01T12:00:00.000000Z';
      const trade = (price, amount) => onFrame({kind: 'trade', exchange: state.exchange, symbol: 'SYNTH',
        time_exchange: t, time_received: t, time_published: t, seq: 1, price, amount, side: 'buy', trade_id: '1'});
      trade(100.01, 1); trade(100.02, 2);
      const before = [...document.querySelectorAll('#tape td.amount')].map((td) => td.textContent);
      onFrame({kind: 'order_book_l2', exchange: state.exchange, symbol: 'SYNTH', time_exchange: t, time_received: t,
               time_published: t, epoch: 1, seq: 5, state: 'live', depth: 20,
               bids: [[100.01, 1.5], [99.9, 0.25]], asks: [[100.03, 2.5]]});
      return {
        before,
        after: [...document.querySelectorAll('#tape td.amount')].map((td) => td.textContent),
        prices: [...document.querySelectorAll('#tape td.price')].map((td) => td.textContent),
        groups: [...document.getElementById('group').options].map((o) => o.value).slice(0, 4),
      };
    })())"""))
    assert got["before"] == ["2", "1"] and got["after"] == ["2.00", "1.00"]
    assert got["prices"] == ["100.02", "100.01"]
    assert got["groups"] == ["", "0.02", "0.05", "0.10"]


def test_live_ladder_has_fixed_decimals_aligned_columns_cumulative_sizes_and_a_depth_chart(page, tmp_path):
    page.open("BTCUSDT")
    s = page.wait_live()
    page.screenshot(tmp_path / "page-live.png")
    asks, bids = s["asks"], s["bids"]  # asks as shown: furthest first, the best just above the spread
    # fixed decimals from the sim's BTCUSDT filters (tick 0.01, step 0.00001), every row and the tape
    assert {decimals(p) for p, _, _ in asks + bids} == {2}, asks + bids
    assert {decimals(x) for _, size, total in asks + bids for x in (size, total)} == {5}
    assert {decimals(t[1]) for t in s["trades"]} == {2} and {decimals(t[2]) for t in s["trades"]} == {5}
    assert "tick 0.01" in s["format"]
    prices = [Decimal(p) for p, _, _ in asks + bids]
    assert prices == sorted(prices, reverse=True) and Decimal(bids[0][0]) < Decimal(asks[-1][0])
    # the total column is the size summed from the best level outwards
    for side in (bids, asks[::-1]):
        running = Decimal(0)
        for _, size, total in side:
            running += Decimal(size)
            assert Decimal(total) == running, side
    # spread in bps, non-zero for BTC even at one tick (0.00167 bps), agreeing with the best prices
    spread, *_, bps = s["spread"].split(" · ")
    best_bid, best_ask = Decimal(bids[0][0]), Decimal(asks[-1][0])
    assert Decimal(spread) == best_ask - best_bid
    assert bps.endswith(" bps") and float(bps[:-4]) > 0
    expected_bps = float((best_ask - best_bid) / ((best_ask + best_bid) / 2) * 10_000)
    assert abs(float(bps[:-4]) - expected_bps) <= expected_bps * 0.01
    assert "100 ms throttle" in s["latency_note"]
    # decimal points line up in each column; the size sits beside its price
    for column in json.loads(page.js(DECIMAL_POINTS_JS)):
        assert len(column) == 2 * DEPTH and max(column) - min(column) < 0.5, column
    gap = page.js("""(() => { const tr = document.querySelector('#ladder tr.bid'), r = document.createRange();
      r.selectNodeContents(tr.cells[0]);
      return tr.cells[1].querySelector('em').getBoundingClientRect().left - r.getBoundingClientRect().right; })()""")
    assert 0 < gap < 100, gap
    # the depth chart: cumulative bids painted left of the mid, asks right of it
    px = json.loads(page.js(DEPTH_PIXELS_JS))
    assert px["bid_left"] > 1000 and px["ask_right"] > 1000, px
    assert px["bid_right"] < px["bid_left"] / 10 and px["ask_left"] < px["ask_right"] / 10, px
    # another symbol has its own decimals (ETHUSDT: step 0.0001)
    page.js("(() => { const s = document.getElementById('symbol'); s.value = 'ETHUSDT';"
            " s.dispatchEvent(new Event('change')); })()")
    eth = page.wait_live("the ETHUSDT ladder")
    assert eth["symbol"] == "ETHUSDT" and "symbol=ETHUSDT" in page.js("location.search")
    assert {decimals(p) for p, _, _ in eth["asks"] + eth["bids"]} == {2}
    assert {decimals(size) for _, size, _ in eth["asks"] + eth["bids"]} == {4}
    page.screenshot(tmp_path / "page-live-eth.png")


def test_paused_market_ladder_equals_pipeline_book_then_greys_out_with_its_age_counting_up(stack, page, tmp_path):
    """Freeze the market (the sim's pause switch): the page's ladder, grouped or not, equals
    `pipeline book --json` at the same seq; then, with nothing arriving, it greys out."""
    config, sim_port = stack["config"], stack["sim_port"]
    page.open("BTCUSDT")
    page.wait_live()
    assert sim_fault(sim_port, name="pause")["ok"]
    try:
        def quiet_book():
            before = pipeline_book(config, "BTCUSDT")
            time.sleep(0.6)
            after = pipeline_book(config, "BTCUSDT")
            return after if after["seq"] == before["seq"] else None
        ref = eventually(quiet_book, 20, 0.0, "the book quiet after the pause")
        s = eventually(lambda: (lambda x: x if x["seq"] == ref["seq"] else None)(page.state()), 10, 0.1,
                       f"the page at seq {ref['seq']}")
        assert s["epoch"] == ref["epoch"] and ref["state"] == "live"
        page.screenshot(tmp_path / "page-paused.png")

        def expected(levels, group: Decimal | None = None, side: str = "bid"):
            out: list[list[Decimal]] = []
            for p, size in levels:
                price = Decimal(str(p))
                if group:
                    steps = price / group
                    price = (steps.to_integral_value("ROUND_FLOOR" if side == "bid" else "ROUND_CEILING")) * group
                if out and out[-1][0] == price:
                    out[-1][1] += Decimal(str(size))
                else:
                    out.append([price, Decimal(str(size))])
            if group and len(levels) == VIEW_DEPTH:
                out.pop()  # the view is full: its last group may go on below it
            total = Decimal(0)
            rows = []
            for price, size in out[:DEPTH]:
                total += size
                rows.append((price, size, total))
            return rows

        def shown(rows):
            return [tuple(Decimal(x) for x in row) for row in rows]

        assert shown(s["bids"]) == expected(ref["bids"])
        assert shown(s["asks"][::-1]) == expected(ref["asks"], side="ask")
        assert Decimal(s["spread"].split(" · ")[0]) == Decimal(str(ref["asks"][0][0])) - Decimal(str(ref["bids"][0][0]))

        # price grouping: ten ticks; bids round down, asks up, sizes add up over the publisher's 20 levels
        page.js("(() => { const g = document.getElementById('group'); g.value = '0.10';"
                " g.dispatchEvent(new Event('change')); })()")
        g = page.state()
        assert "grouped by 0.10" in g["format"] and "group=0.10" in page.js("location.search")
        assert shown(g["bids"]) == expected(ref["bids"], Decimal("0.10"))
        assert shown(g["asks"][::-1]) == expected(ref["asks"], Decimal("0.10"), "ask")
        page.screenshot(tmp_path / "page-grouped.png")
        page.js("(() => { const g = document.getElementById('group'); g.value = g.options[0].value;"
                " g.dispatchEvent(new Event('change')); })()")

        # nothing arrives: greyed out, the age counts up, the rates fall to 0
        stale = eventually(lambda: (lambda x: x if x["stale"] else None)(page.state()), STALE_AFTER_S + 5, 0.1,
                           "the page greyed out")
        assert "NO BOOK UPDATE" in stale["banner"] and stale["feed"] == "feed live"
        assert page.js("getComputedStyle(document.getElementById('ladder-panel')).filter") == "grayscale(1)"
        first_age = float(stale["age"].split()[0])
        time.sleep(1.2)
        assert float(page.state()["age"].split()[0]) >= first_age + 1.0
        zero = eventually(lambda: (lambda x: x if x["rate"] == "0" and x["trade_rate"] == "0.0" else None)(page.state()),
                          10, 0.2, "rates at 0")
        assert zero["stale"] and zero["seq"] == ref["seq"]
        page.screenshot(tmp_path / "page-stale.png")
    finally:
        sim_fault(sim_port, name="resume")
    back = eventually(lambda: (lambda x: x if not x["stale"] and x["seq"] > ref["seq"] else None)(page.state()), 20,
                      0.2, "the page live again after resume")
    assert back["banner"] == ""


def test_narrow_window_puts_the_trade_tape_below_the_ladder(stack, page, tmp_path):
    geometry = """JSON.stringify(Object.fromEntries(['ladder-panel', 'tape-panel', 'depth-panel'].map((id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      return [id, {left: r.left, right: r.right, top: r.top, bottom: r.bottom}];
    }).concat([['scroll_width', document.documentElement.scrollWidth],
               ['client_width', document.documentElement.clientWidth]])))"""
    page.open("BTCUSDT")
    page.wait_live()
    wide = json.loads(page.js(geometry))
    assert wide["tape-panel"]["left"] >= wide["ladder-panel"]["right"]  # beside it on a wide window
    stack["browser"].set_viewport(400, 900)
    narrow = eventually(lambda: (lambda g: g if g["client_width"] <= 400 else None)(json.loads(page.js(geometry))),
                        5, 0.1, "the narrow layout")
    ladder, tape, width = narrow["ladder-panel"], narrow["tape-panel"], narrow["client_width"]
    assert tape["top"] >= ladder["bottom"], narrow  # the tape below the ladder
    assert abs(tape["left"] - ladder["left"]) < 1 and ladder["right"] <= width and tape["right"] <= width
    assert narrow["scroll_width"] <= width  # nothing sticks out sideways
    s = page.wait_live("the narrow page live")
    assert len(s["asks"]) == DEPTH
    page.screenshot(tmp_path / "page-narrow.png")
    stack["browser"].set_viewport(400, 2000)  # the whole page in one picture, laid out at the same width
    page.screenshot(tmp_path / "page-narrow-whole.png")


def test_stopped_sim_or_publisher_greys_out_the_book_and_says_why(stack, page, tmp_path):
    """Last in the module: it stops the sim, so the ingest loses its venue, then the publisher."""
    page.open("BTCUSDT")
    page.wait_live()
    procs = stack["procs"]
    sim = next(p for name, p in procs.procs if name == "sim")
    procs.stop(sim)
    s = eventually(lambda: (lambda x: x if x["stale"] and x["feed"] != "feed live" else None)(page.state()), 30, 0.2,
                   "the page showing the feed not live")
    assert s["banner"].startswith("FEED ") and "last book update" in s["banner"]
    assert len(s["bids"]) == DEPTH  # the last book stays on screen, greyed out
    assert page.js("getComputedStyle(document.getElementById('ladder-panel')).opacity") == "0.45"
    time.sleep(1.0)  # let the age count past the moment the feed went down
    page.screenshot(tmp_path / "page-sim-stopped.png")
    publisher = next(p for name, p in procs.procs if name == "publisher")
    procs.stop(publisher)
    s = eventually(lambda: (lambda x: x if x["banner"].startswith("DISCONNECTED") else None)(page.state()), 15, 0.2,
                   "the page saying the publisher is gone")
    assert s["stale"] and s["conn"].startswith("disconnected") and len(s["bids"]) == DEPTH
    page.screenshot(tmp_path / "page-disconnected.png")
