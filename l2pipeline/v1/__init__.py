"""``l2pipeline.v1``: messages and stubs generated from proto/l2pipeline/v1/marketdata.proto."""
