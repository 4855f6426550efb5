"""ingest.wsclient against a real WebSocket server (the websockets library) on loopback."""

import asyncio

import pytest
from websockets.asyncio.server import serve

from ingest.wsclient import HandshakeFailed, open_connection

pytestmark = pytest.mark.integration


async def _server(handler):
    server = await serve(handler, "127.0.0.1", 0, compression=None)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/stream?streams=a@b"


def test_messages_fragments_pings_and_close():
    async def main():
        got_pong = asyncio.Event()

        async def handler(ws):
            assert ws.request.path == "/stream?streams=a@b"
            await ws.send("one")
            await ws.send(["fr", "ag", "ment"])         # a fragmented text message
            await ws.send(b"\x00\x01")                  # binary
            pong_waiter = await ws.ping(b"hi")          # must be answered by the client
            await asyncio.wait_for(pong_waiter, 5)
            got_pong.set()
            msg = await ws.recv()                       # our text frame arrives unmasked for the app
            await ws.send("echo:" + msg)
            await ws.close(4000, "bye")

        server, url = await _server(handler)
        frames = []
        try:
            conn = await open_connection(url, lambda data, ns: frames.append(data), priority=True)
            await asyncio.wait_for(got_pong.wait(), 5)
            conn.send_text("hello")
            reason = await asyncio.wait_for(conn.closed, 5)
        finally:
            server.close()
            await server.wait_closed()
        assert frames == [b"one", b"fragment", b"\x00\x01", b"echo:hello"]
        assert reason == "closed (code 4000)"

    asyncio.run(main())


def test_depth_frames_queue_and_drain_in_order():
    async def main():
        async def handler(ws):
            for i in range(1000):
                await ws.send(str(i))
            await ws.close()

        server, url = await _server(handler)
        frames = []
        try:
            conn = await open_connection(url, lambda data, ns: frames.append(int(data)), priority=False)
            await asyncio.wait_for(conn.closed, 10)
            for _ in range(200):  # the queue drains in batches through call_soon
                if conn.pending() == 0:
                    break
                await asyncio.sleep(0)
        finally:
            server.close()
            await server.wait_closed()
        assert frames == list(range(1000))

    asyncio.run(main())


def test_our_ping_is_answered():
    async def main():
        async def handler(ws):
            await asyncio.sleep(5)

        server, url = await _server(handler)
        try:
            conn = await open_connection(url, lambda data, ns: None, priority=True)
            conn.ping()
            assert conn.ping_outstanding
            for _ in range(500):
                if not conn.ping_outstanding:
                    break
                await asyncio.sleep(0.01)
            assert not conn.ping_outstanding
            conn.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_refused_upgrade_is_a_handshake_failure():
    async def main():
        async def handler(ws):
            pass

        def refuse(connection, request):
            return connection.respond(429, "slow down\n")

        server = await serve(handler, "127.0.0.1", 0, process_request=refuse)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(HandshakeFailed, match="429"):
                await open_connection(f"ws://127.0.0.1:{port}/ws", lambda d, n: None, priority=True)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())
