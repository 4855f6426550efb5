"""The committed gRPC stubs (l2pipeline/v1) are what grpcio-tools makes of the .proto today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "l2pipeline/v1/marketdata.proto"
GENERATED = ["marketdata_pb2.py", "marketdata_pb2.pyi", "marketdata_pb2_grpc.py"]


def test_committed_stubs_match_the_proto(tmp_path):
    out = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}",
                          f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "proto" / PROTO)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in GENERATED:
        fresh = (tmp_path / "l2pipeline" / "v1" / name).read_text()
        committed = (ROOT / "l2pipeline" / "v1" / name).read_text()
        assert committed == fresh, f"l2pipeline/v1/{name} is stale against proto/{PROTO}: run `make proto`"


def test_the_service_is_the_contract():
    from l2pipeline.v1 import marketdata_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["MarketData"]
    assert service.full_name == "l2pipeline.v1.MarketData"  # DESIGN.md contract 8
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods}
    assert methods == {
        "GetBook": ("GetBookRequest", "Book", False),
        "SubscribeBooks": ("SubscribeBooksRequest", "BookMessage", True),
        "SubscribeTrades": ("SubscribeTradesRequest", "Trade", True),
        "ListFeeds": ("ListFeedsRequest", "ListFeedsResponse", False),
        # later kinds, as RPCs of their own (the contract: the methods above do not change)
        "SubscribeQuotes": ("SubscribeQuotesRequest", "Quote", True),
        "SubscribeDerivativeTickers": ("SubscribeDerivativeTickersRequest", "DerivativeTicker", True),
        "SubscribeLiquidations": ("SubscribeLiquidationsRequest", "Liquidation", True),
    }
    fields = {name: [f.name for f in pb.DESCRIPTOR.message_types_by_name[name].fields]
              for name in ("BookMessage", "Trade", "Level")}
    assert fields["BookMessage"] == ["exchange", "symbol", "epoch", "seq", "is_snapshot", "state", "bids", "asks",
                                     "time_exchange", "time_received"]
    assert fields["Trade"] == ["exchange", "symbol", "epoch", "seq", "trade_id", "price", "size", "side",
                               "time_exchange", "time_received", "liquidation"]
    # fields are only ever appended under new numbers: an old client decodes a new Trade (and skips 11)
    numbers = {f.name: f.number for f in pb.DESCRIPTOR.message_types_by_name["Trade"].fields}
    assert list(numbers.values()) == list(range(1, 12)) and numbers["liquidation"] == 11
    assert fields["Level"] == ["price", "size"]
