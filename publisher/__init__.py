"""The WebSocket publisher: every trade and book of the pipeline on one port (docs/websocket.md)."""
