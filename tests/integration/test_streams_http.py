"""Runtime streams through the publisher's HTTP API (issue 14, DESIGN.md contract 9): sim, ingest and
publisher as real processes; GET/POST /api/streams and DELETE /api/streams/EX/SYM call the ingest's
control socket; bad input gets a JSON error with a reason and changes nothing; writing needs the
token when one is set, and from another host is refused without one."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from helpers import PIPELINE, Procs, eventually, feeds, short_tmpdir, start_publisher, start_sim, write_config
from pipeline.config import load_config
from pipeline.shm import BookReader, BookState

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"


def call(port: int, method: str, path: str, body: object = None, raw: bytes | None = None,
         headers: dict | None = None, host: str = "127.0.0.1") -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def stack():
    workdir = short_tmpdir()
    procs = Procs(workdir)
    try:
        port = start_sim(procs, "BTCUSDT,ETHUSDT,SOLUSDT", rate=400)
        config = write_config(workdir, port, ["BTCUSDT"], extra="max_symbols = 2\n",
                              sim_table='[publisher]\nhost = "0.0.0.0"\nport = 0\n')
        procs.start("ingest", PIPELINE + ["--config", str(config), "ingest", "sim"])
        pub = start_publisher(procs, config)
        eventually(lambda: feeds(config)["BTCUSDT"]["state"] == "live", 30, 0.2, "BTCUSDT live")
        yield {"procs": procs, "config": config, "pub": pub, "workdir": workdir}
    finally:
        procs.stop_all()


def symbols(stack) -> list[str]:
    status, body = call(stack["pub"], "GET", "/api/streams")
    assert status == 200
    return body["exchanges"][0]["symbols"]


def test_post_subscribes_and_delete_unsubscribes_through_the_ingest(stack):
    port, config = stack["pub"], load_config(stack["config"])
    status, body = call(port, "POST", "/api/streams", {"exchange": "sim", "symbols": ["ETHUSDT"]})
    assert status == 200 and body["added"] == ["ETHUSDT"], body
    eventually(lambda: feeds(stack["config"])["ETHUSDT"]["state"] == "live", 30, 0.2, "ETHUSDT live")
    _, listing = call(port, "GET", "/api/streams")
    rows = {r["symbol"]: r for r in listing["exchanges"][0]["streams"]}
    assert rows["ETHUSDT"]["source"] == "runtime" and rows["ETHUSDT"]["state"] == "live"
    assert rows["BTCUSDT"]["source"] == "config"

    status, body = call(port, "DELETE", "/api/streams/sim/ETHUSDT")
    assert status == 200 and body["removed"] == ["ETHUSDT"], body
    with BookReader.open(config.shm_prefix, "sim") as reader:
        assert reader.read("ETHUSDT").state is BookState.REMOVED
    assert symbols(stack) == ["BTCUSDT"]


@pytest.mark.parametrize("method,path,body,raw,status,code", [
    ("POST", "/api/streams", {"exchange": "sim", "symbols": ["XRPUSDT"]}, None, 422, "unknown_symbol"),
    ("POST", "/api/streams", {"exchange": "nosuch", "symbols": ["BTCUSDT"]}, None, 404, "unknown_exchange"),
    ("POST", "/api/streams", None, b'{"exchange": "sim", "symbols": [', 400, "bad_request"),
    ("POST", "/api/streams", {"exchange": "sim", "symbols": "ETHUSDT"}, None, 400, "bad_request"),
    ("POST", "/api/streams", {"exchange": "sim", "symbols": ["ETHUSDT", "SOLUSDT"]}, None, 409, "full"),
    ("DELETE", "/api/streams/sim/SOLUSDT", None, None, 404, "not_followed"),
    ("DELETE", "/api/streams/nosuch/BTCUSDT", None, None, 404, "unknown_exchange"),
])
def test_bad_input_gets_a_json_error_and_changes_nothing(stack, method, path, body, raw, status, code):
    before = symbols(stack)
    got, reply = call(stack["pub"], method, path, body, raw)
    assert (got, reply["code"]) == (status, code), reply
    assert reply["error"]
    assert symbols(stack) == before


def test_a_write_from_another_host_without_a_token_is_refused(stack):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            ip = s.getsockname()[0]
        except OSError:
            pytest.skip("no non-loopback address on this machine")
    if ip.startswith("127."):
        pytest.skip("no non-loopback address on this machine")
    before = symbols(stack)
    status, reply = call(stack["pub"], "POST", "/api/streams", {"exchange": "sim", "symbols": ["ETHUSDT"]}, host=ip)
    assert status == 403 and reply["code"] == "forbidden"
    status, _ = call(stack["pub"], "GET", "/api/streams", host=ip)
    assert status == 200  # reading is allowed
    assert symbols(stack) == before


def test_a_write_from_a_page_of_another_origin_is_refused(stack):
    status, reply = call(stack["pub"], "POST", "/api/streams", {"exchange": "sim", "symbols": ["ETHUSDT"]},
                         headers={"Origin": "http://evil.example"})
    assert status == 403 and reply["code"] == "origin"


def test_with_a_token_set_every_api_call_needs_it(stack):
    procs, workdir = stack["procs"], stack["workdir"]
    text = stack["config"].read_text().replace('port = 0\n', f'port = 0\ntoken = "{TOKEN}"\n', 1)
    tok_config = workdir / "tok.toml"
    tok_config.write_text(text)
    port = start_publisher(procs, tok_config, name="publisher-token")
    before = symbols(stack)
    status, reply = call(port, "POST", "/api/streams", {"exchange": "sim", "symbols": ["ETHUSDT"]})
    assert status == 401 and reply["code"] == "token"
    assert call(port, "GET", "/api/streams")[0] == 401
    assert symbols(stack) == before
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, reply = call(port, "POST", "/api/streams", {"exchange": "sim", "symbols": ["ETHUSDT"]}, headers=auth)
    assert status == 200 and reply["added"] == ["ETHUSDT"]
    status, reply = call(port, "DELETE", "/api/streams/sim/ETHUSDT", headers=auth)
    assert status == 200 and reply["removed"] == ["ETHUSDT"]
