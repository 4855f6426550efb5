"""Runner discovery (Lighter market ids) against a real HTTP server on loopback: failures and
unreadable answers are counted and retried with backoff; a good answer maps the symbols and
refreshes the bus instruments; an unknown symbol is a config error that stops the process."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import pytest
from aiohttp import web

from ingest.adapters.lighter import LighterAdapter
from ingest.feed import P, BusPublisher, FeedBooks
from ingest.runner import Runner
from pipeline.config import ExchangeConfig
from pipeline.errors import ConfigError
from pipeline.shm import BookWriter

pytestmark = pytest.mark.integration

DETAILS = {"code": 200, "order_book_details": [
    {"market_id": 0, "symbol": "ETH", "size_decimals": 4, "price_decimals": 2, "status": "active"},
    {"market_id": 1, "symbol": "BTC", "size_decimals": 5, "price_decimals": 1, "status": "active"}],
    "spot_order_book_details": [
    {"market_id": 2048, "symbol": "ETH/USDC", "size_decimals": 4, "price_decimals": 2, "status": "active"}]}


async def _serve(answers: list[tuple[int, bytes]]):
    """An HTTP server answering /api/v1/orderBookDetails with ``answers`` in turn (the last repeats)."""
    calls = []

    async def details(request):
        status, body = answers[min(len(calls), len(answers) - 1)]
        calls.append(request.path)
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/orderBookDetails", details)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, port, calls


def _runner(port: int, symbols: tuple[str, ...], shm_prefix: str):
    cfg = ExchangeConfig(name="lt", adapter="lighter", symbols=symbols, rest_url=f"http://127.0.0.1:{port}",
                         ws_url=f"ws://127.0.0.1:{port}/stream")
    adapter = LighterAdapter(cfg)
    writer = BookWriter(shm_prefix, "lt", symbols, 10, epoch=1)
    feed = FeedBooks("lt", adapter, writer, BusPublisher(None, None), epoch=1)
    stop = asyncio.Event()
    return Runner(cfg, adapter, feed, stop, rng=random.Random(1)), adapter, feed, writer


def test_discovery_retries_errors_and_unreadable_answers_then_maps_symbols(shm_prefix):
    async def main():
        server, port, calls = await _serve([(503, b"busy"), (200, b"{not json"), (200, json.dumps(DETAILS).encode())])
        runner, adapter, feed, writer = _runner(port, ("BTC", "2048"), shm_prefix)
        assert feed.feeds["2048"].instrument.base == "2048"  # a bare market id: named by discovery
        try:
            async with aiohttp.ClientSession() as session:
                await asyncio.wait_for(runner._discover(session), 20)
            assert len(calls) == 3
            assert runner.header[P["rest_errors"]] == 2 and runner.header[P["rest_requests"]] == 3
            frames = [f for g in adapter.stream_groups() for f in g.subscribe]
            assert any('"order_book/1"' in f for f in frames) and any('"order_book/2048"' in f for f in frames)
            ins = feed.feeds["2048"].instrument
            assert (ins.base, ins.quote, ins.kind) == ("ETH", "USDC", "spot")
            assert feed.feeds["BTC"].instrument.kind == "perp"
        finally:
            await server.cleanup()
            writer.close(unlink=True)

    asyncio.run(main())


def test_discovery_of_a_symbol_the_venue_does_not_list_is_a_config_error(shm_prefix):
    async def main():
        server, port, _ = await _serve([(200, json.dumps(DETAILS).encode())])
        runner, *_, writer = _runner(port, ("DOGE",), shm_prefix)
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(ConfigError, match="DOGE"):
                    await asyncio.wait_for(runner._discover(session), 20)
        finally:
            await server.cleanup()
            writer.close(unlink=True)

    asyncio.run(main())
