"""The page's streams panel (issue 14) in headless Chromium against sim -> ingest -> publisher: it lists
every stream with its state, adds a symbol (which goes live), shows the venue's refusal of an unknown
symbol, and removes a symbol (its state turns "removed"), all through /api/streams."""

from __future__ import annotations

import json

import pytest

from helpers import (CHROMIUM, PIPELINE, Procs, chromium, eventually, feeds, free_port, short_tmpdir,
                     start_publisher, start_sim, write_config)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install -y chromium)")]

ROWS_JS = """JSON.stringify([...document.querySelectorAll('#streams tbody tr')].map((tr) => {
  const c = [...tr.cells].map((td) => td.textContent);
  return {exchange: c[0], symbol: c[1], source: c[2], state: c[3], remove: !!tr.querySelector('button.remove')};
}))"""


def add(page, symbol: str) -> None:
    page.evaluate(f"document.getElementById('streams-symbol').value = {json.dumps(symbol)};"
                  "document.getElementById('streams-submit').click()")


def rows(page) -> dict:
    return {r["symbol"]: r for r in json.loads(page.evaluate(ROWS_JS))}


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        sim_port = start_sim(procs, "BTCUSDT,ETHUSDT", rate=300)
        config = write_config(workdir, sim_port, ["BTCUSDT"], extra=f"[publisher]\nport = {free_port()}\n")
        procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        port = start_publisher(procs, config)
        eventually(lambda: feeds(config)["BTCUSDT"]["state"] == "live", 30, 0.2, "BTCUSDT live")
        yield {"procs": procs, "config": config, "port": port, "workdir": workdir}
    finally:
        procs.stop_all()


def test_the_streams_panel_adds_refuses_and_removes(stack, tmp_path):
    with chromium(stack["workdir"]) as page:
        page.open(f"http://127.0.0.1:{stack['port']}/")
        eventually(lambda: rows(page).get("BTCUSDT", {}).get("state") == "live", 30, 0.2, "BTCUSDT listed live")
        assert rows(page)["BTCUSDT"]["source"] == "config"

        add(page, "ETHUSDT")
        eventually(lambda: rows(page).get("ETHUSDT", {}).get("state") == "live", 40, 0.2, "ETHUSDT live on the page")
        assert rows(page)["ETHUSDT"]["source"] == "runtime"
        assert feeds(stack["config"])["ETHUSDT"]["state"] == "live"

        add(page, "XRPUSDT")
        error = eventually(lambda: page.evaluate("document.getElementById('streams-error').textContent"), 20, 0.2,
                           "the refusal shown")
        assert "XRPUSDT" in error and "does not list" in error
        assert "XRPUSDT" not in rows(page)
        page.screenshot(tmp_path / "streams-panel.png")

        page.evaluate("[...document.querySelectorAll('#streams tbody tr')]"
                      ".find((tr) => tr.cells[1].textContent === 'ETHUSDT').querySelector('button.remove').click()")
        eventually(lambda: rows(page).get("ETHUSDT", {}).get("state") == "removed", 20, 0.2, "ETHUSDT removed")
        assert not rows(page)["ETHUSDT"]["remove"]
        assert feeds(stack["config"])["ETHUSDT"]["state"] == "removed"
