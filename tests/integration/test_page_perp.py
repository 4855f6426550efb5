"""The live page's perpetual panel (issue 13) in headless Chromium: OKX sim (a swap and a spot
instrument, every channel) -> ingest -> publisher.  For the swap the panel shows the mark, index,
funding rate, a countdown to the next funding that the clock moves, open interest and a liquidation
tape, with the values the bus carries; for the spot instrument it says there is no ticker."""

from __future__ import annotations

import json
import re
import time

import pytest

from helpers import CHROMIUM, PIPELINE, Procs, chromium, eventually, feeds, free_port, short_tmpdir, start_publisher
from pipeline.config import load_config
from pipeline.consumer import Consumer, DerivativeTicker

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")]
SWAP, SPOT = "BTC-USDT-SWAP", "BTC-USDT"

PERP_JS = """JSON.stringify((() => {
  const text = (id) => document.getElementById(id).textContent;
  return {none: document.getElementById('perp-panel').classList.contains('none'), mark: text('mark'),
          index: text('index'), funding: text('funding'), countdown: text('countdown'), oi: text('oi'),
          symbol: document.getElementById('symbol').value,
          liqs: [...document.querySelectorAll('#liqs tr.liq')].map((tr) => [...tr.cells].map((td) => td.textContent))};
})())"""


def test_perp_panel_shows_the_ticker_a_funding_countdown_and_liquidations_and_a_spot_symbol_none(tmp_path):
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        (workdir / "sim.toml").write_text('[pipeline]\nrun_dir = "simrun"\n[exchanges.x]\nadapter = "binance"\n'
                                          'symbols = ["X"]\n')
        ready = workdir / "sim.port"
        procs.start("sim", PIPELINE + ["--config", str(workdir / "sim.toml"), "sim", "--protocol", "okx", "--port", "0",
                                       "--symbols", f"{SWAP},{SPOT}", "--rate", "600", "--seed", "3",
                                       "--ready-file", str(ready)])
        sim_port = int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="sim ready file"))
        ws_port = free_port()
        cfg = workdir / "p.toml"
        cfg.write_text(f"""
[pipeline]
run_dir = "run"
[exchanges.okx]
adapter = "okx"
symbols = ["{SWAP}", "{SPOT}"]
depth = 20
ws_url = "ws://127.0.0.1:{sim_port}/ws/v5/public"
rest_url = "http://127.0.0.1:{sim_port}"
[publisher]
port = {ws_port}
""")
        procs.start("ingest", PIPELINE + ["--config", str(cfg), "ingest", "okx"])
        eventually(lambda: all(f["state"] == "live" for f in feeds(cfg).values()), 30, 0.2, "books live")
        assert start_publisher(procs, cfg) == ws_port
        with Consumer(load_config(cfg), use_shm=False, kinds=["derivative_ticker"]) as consumer, \
                chromium(workdir) as browser:
            browser.open(f"http://127.0.0.1:{ws_port}/?exchange=okx&symbol={SWAP}")
            browser.set_viewport(1280, 900)

            def panel():
                s = json.loads(browser.evaluate(PERP_JS) or "null")
                return s if s and not s["none"] and s["mark"] != "–" and s["index"] != "–" and s["oi"] != "–" \
                    and s["funding"] != "–" and s["liqs"] else None
            shown = eventually(panel, 40, 0.2, "the perp panel with a ticker and liquidations")
            shown_at = time.time()
            tickers = [e for e in consumer.poll(1.5) if isinstance(e, DerivativeTicker) and e.symbol == SWAP]
            browser.screenshot(tmp_path / "perp.png")
            # the spot instrument: no derivative ticker, and the panel says so (tickers come once a second:
            # after 3 s a spot ticker would have been shown)
            browser.evaluate("(() => { const s = document.getElementById('symbol'); s.value = '%s';"
                             " s.dispatchEvent(new Event('change')); return 1; })()" % SPOT)
            eventually(lambda: json.loads(browser.evaluate(PERP_JS))["symbol"] == SPOT, 10, 0.1, "spot shown")
            time.sleep(3)
            spot = json.loads(browser.evaluate(PERP_JS))
            none_text = browser.evaluate("document.getElementById('perp-none').offsetParent !== null")
            browser.screenshot(tmp_path / "spot.png")
        assert spot["none"] and spot["liqs"] == [] and none_text is True
        assert tickers
        t = tickers[-1]
        assert shown["funding"] == f"{t.funding_rate * 100:.4f}%" == "0.0100%"
        assert float(shown["mark"]) > 0 and float(shown["index"]) > 0 and float(shown["oi"]) >= 1000
        # the next 8-hourly funding, counted down: h m s, less than 8 hours away
        h, m, s = map(int, re.fullmatch(r"(\d+)h (\d\d)m (\d\d)s", shown["countdown"]).groups())
        left = h * 3600 + m * 60 + s
        want = (t.funding_timestamp / 1e6) - shown_at
        assert 0 <= left < 8 * 3600 and abs(left - want) < 5
        for when, price, amount, side in shown["liqs"]:
            assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", when) and float(price) > 0 and float(amount) > 0
            assert side in ("buy", "sell")
    finally:
        procs.stop_all()
