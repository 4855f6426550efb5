"""The project's exception tree, split by who is at fault.

    PipelineError
    +-- ConfigError              the operator's config is wrong (key + reason); exit 2 at start
    +-- VenueError               the venue sent something we must handle, never a crash
    |   +-- MalformedFrame       not parseable / fields missing or of the wrong type
    |   +-- UnknownFrame         well-formed but of a kind this adapter does not know
    |   +-- ChecksumMismatch     the venue's checksum / BBO disagrees with our book
    |   +-- SnapshotError        a REST snapshot could not be used (status, body, stale)
    +-- SharedMemoryError        a segment is missing, of another layout, or of another run
    +-- StreamError              a runtime stream change was refused (``code``, reason); nothing changed
        +-- StreamsFull          every slot of the exchange is taken (max_symbols)

Anything else raised inside a process is our bug: it propagates to the top of the
process, which logs it and exits non-zero; supervisord restarts the process and
consumers see a new epoch.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every exception the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A config value is wrong. ``str()`` is ``KEY: REASON``."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class VenueError(PipelineError):
    """The venue sent something wrong or unexpected."""


class MalformedFrame(VenueError):
    """A frame that cannot be parsed or lacks required fields."""


class UnknownFrame(VenueError):
    """A well-formed frame of a kind the adapter does not handle."""


class ChecksumMismatch(VenueError):
    """The venue's own check (checksum, BBO at the same update id) disagrees with our book."""


class SnapshotError(VenueError):
    """A REST snapshot failed or cannot be aligned with the stream."""


class SharedMemoryError(PipelineError):
    """A shared-memory segment is missing or does not match the expected layout."""


class StreamError(PipelineError):
    """A runtime stream change (subscribe, unsubscribe, reset) was refused and changed nothing.

    ``code`` says why, for programs (the control socket and HTTP API pass it on):
    ``bad_request``, ``unknown_exchange``, ``unknown_symbol``, ``not_followed``, ``full``,
    ``unsupported``, ``not_running``, ``unavailable``."""

    code = "bad_request"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class StreamsFull(StreamError):
    """Every shared-memory slot of the exchange is taken (``max_symbols``)."""

    code = "full"
