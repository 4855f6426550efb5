"""Feed health for ``GET /health``, ``/metrics`` and ``status`` events: shared memory + the mirror.

A feed is live when its view in shared memory says ``live`` and its ingest still beats
(pipeline.status.feeds turns a live view of a silent ingest into ``stale``).  Anything
else is a reason for a 503.  The publisher's own book of a feed is reported beside it
(``publisher_seq``) but does not decide health: a quiet symbol may not have sent the
publisher a message yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import status as pipeline_status
from pipeline.config import Config
from publisher.mirror import BookMirror


@dataclass
class Health:
    ok: bool
    feeds: list[dict] = field(default_factory=list)  # rows of pipeline.status.feeds, plus publisher_seq
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"status": "ok" if self.ok else "degraded", "reasons": self.reasons, "feeds": self.feeds}


def check(config: Config, mirror: BookMirror) -> Health:
    feeds, _ = pipeline_status.feeds(config)
    reasons = []
    for f in feeds:
        book = mirror.book(f["exchange"], f["symbol"])
        f["publisher_seq"] = book.seq if book is not None else None
        if f["state"] == "down":
            reasons.append(f"{f['exchange']} {f['symbol']}: down (no shared memory: is the ingest running?)")
        elif f["state"] not in ("live", "removed"):  # removed: unsubscribed on purpose (docs/streams.md)
            last = f" (last error {f['last_error_age_s']:.0f}s ago: {f['last_error']})" if f.get("last_error") else ""
            reasons.append(f"{f['exchange']} {f['symbol']}: {f['state']}{last}")
    return Health(not reasons, feeds, reasons)
