"""Generated gRPC API of the pipeline (proto/l2pipeline/v1/marketdata.proto; docs/grpc.md).

Only generated code lives under ``l2pipeline.v1``: ``marketdata_pb2`` (messages),
``marketdata_pb2_grpc`` (``MarketDataStub`` for clients) and their type stubs.  Regenerate
with ``make proto`` after changing the .proto; tests/unit/test_grpc_stubs.py fails while
they are stale.
"""
