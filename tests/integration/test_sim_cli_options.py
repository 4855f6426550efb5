"""`pipeline sim` command-line options of the venue protocols reach the server."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from helpers import PIPELINE, Procs, eventually, short_tmpdir

pytestmark = pytest.mark.integration


def _start(protocol: str, *extra: str) -> tuple[Procs, int]:
    workdir = short_tmpdir()
    procs = Procs(workdir)
    (workdir / "sim.toml").write_text('[pipeline]\nrun_dir = "simrun"\n[exchanges.x]\nadapter = "okx"\n'
                                      'symbols = ["BTC-USDT"]\n')
    ready = workdir / "sim.port"
    procs.start("sim", PIPELINE + ["--config", str(workdir / "sim.toml"), "sim", "--protocol", protocol, "--port", "0",
                                   "--symbols", "BTC-USDT", "--rate", "50", "--ready-file", str(ready), *extra])
    return procs, int(eventually(lambda: ready.exists() and ready.read_text().strip(), 20, what="sim ready file"))


def test_okx_idle_timeout_from_the_command_line_closes_a_silent_client():
    procs, port = _start("okx", "--idle-timeout", "1.5")
    try:
        async def main():
            async with connect(f"ws://127.0.0.1:{port}/ws/v5/public", ping_interval=None) as ws:
                await ws.send('{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}')
                t0 = time.monotonic()
                with pytest.raises(ConnectionClosed):
                    while time.monotonic() - t0 < 20:
                        await asyncio.wait_for(ws.recv(), 20)
                return ws.close_code, ws.close_reason

        # the sim closed us: no message from the client for 1.5 s (the venue's 30 s, shortened)
        code, reason = asyncio.run(main())
        assert code == 4004 and "1.5 s" in reason
    finally:
        procs.stop_all()
