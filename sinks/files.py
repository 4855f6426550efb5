"""CSV files of the sink: append with crash repair, buffered writes, fsync, gzip.

A ``DailyFile`` is one ``.csv`` file being appended to.  Rows are buffered in
memory in whole messages and written with one ``os.write`` per flush, so a
kill can only cut the file between two writes (or, on a very large write, at a
page boundary).  Opening a file that exists repairs its tail first:

- a trailing partial line (no ``\\n``) is cut;
- in a book file, trailing ``is_snapshot=true`` rows are cut as well: every block
  the sink writes ends with a non-snapshot row, so such rows are an unfinished
  block, which a reader would merge with the next block;
- a file that does not start with the expected header is moved aside
  (``NAME.bad-TIMESTAMP``) and a fresh file is started.

Write errors (disk full, permissions, a missing directory) raise ``OSError`` from
``flush``; the unwritten bytes stay buffered, so the next successful flush
continues exactly where the failed one stopped.  The caller decides how often to
retry and when the buffer is too large to keep (``drop_pending``).
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import time
from pathlib import Path

from sinks.tardis import BOOK, HEADERS

_TAIL_CHUNK = 1 << 16


def _read_at(fd: int, offset: int, n: int) -> bytes:
    return os.pread(fd, n, offset)


def _is_snapshot_row(line: bytes) -> bool:
    """Whether a book row has ``is_snapshot`` (the 5th field) true."""
    if b'"' in line:  # quoted fields: let the csv module split it
        fields = next(csv.reader([line.decode(errors="replace")]), [])
        return len(fields) > 4 and fields[4] == "true"
    fields = line.split(b",", 5)
    return len(fields) > 4 and fields[4] == b"true"


def repaired_size(fd: int, size: int, datatype: str) -> int:
    """Length to truncate the file to: whole lines only, and no unfinished snapshot block.

    Returns 0 when not even the header line is complete.
    """
    header_len = len(HEADERS[datatype])
    end = size
    # 1. cut a partial last line
    if end and _read_at(fd, end - 1, 1) != b"\n":
        pos = end
        while pos > 0:
            start = max(0, pos - _TAIL_CHUNK)
            chunk = _read_at(fd, start, pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                end = start + i + 1
                break
            pos = start
        else:
            end = 0
    if end < header_len:
        return 0
    if datatype != BOOK:
        return end
    # 2. cut an unfinished snapshot block (a run of snapshot rows at the end)
    while end > header_len:
        start = max(header_len, end - _TAIL_CHUNK)
        chunk = _read_at(fd, start, end - start)
        lines = chunk[:-1].split(b"\n")  # chunk ends with "\n"
        if start > header_len:
            lines = lines[1:]  # maybe cut at the front: look at it with the next chunk
        if not lines:
            return end
        cut = end
        for line in reversed(lines):
            if not _is_snapshot_row(line):
                return cut
            cut -= len(line) + 1
        end = cut
    return end


def last_row(path: Path) -> list[str] | None:
    """The fields of the last complete row of a CSV file (not the header), or None."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    with fh:
        pos = fh.seek(0, os.SEEK_END)
        buf = b""
        while pos > 0:
            start = max(0, pos - _TAIL_CHUNK)
            fh.seek(start)
            buf = fh.read(pos - start) + buf
            pos = start
            if buf.count(b"\n") >= 2:  # a whole line before the last complete one
                break
    lines = buf.split(b"\n")[:-1]  # complete lines only
    if pos == 0 and lines:
        lines = lines[1:]  # the header
    if not lines:
        return None
    return next(csv.reader([lines[-1].decode(errors="replace")]))


class DailyFile:
    """One CSV file being appended to, with its write buffer."""

    def __init__(self, path: Path, datatype: str):
        self.path = Path(path)
        self.datatype = datatype
        self.fd: int | None = None
        self._pending: list[bytes] = []
        self._marks: list[tuple[int, object]] = []  # (end offset in pending, caller's mark)
        self.pending_bytes = 0
        self.pending_rows = 0
        self.bytes_written = 0
        self.rows_written = 0
        self.durable_mark: object = None  # mark of the last chunk written completely
        self._mid_line = False  # the last write stopped inside a row
        self.opened = False  # created or appended to at least once
        self.key: tuple[str, str] | None = None  # (exchange, symbol) of the stream, for the caller

    # ---------------------------------------------------------------- opening
    def ensure_open(self) -> None:
        """Open (create, or repair and append to) the file. Raises OSError."""
        if self.fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        gz = self.path.with_name(self.path.name + ".gz")
        if not self.path.exists() and gz.exists():
            _gunzip(gz, self.path)  # a closed day being written again (the clock went back)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            header = HEADERS[self.datatype].encode()
            if size:
                head = _read_at(fd, 0, len(header))
                if head != header[:len(head)]:
                    os.close(fd)
                    fd = None
                    aside = self.path.with_name(f"{self.path.name}.bad-{int(time.time())}")
                    os.replace(self.path, aside)
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
                    size = 0
            new = repaired_size(fd, size, self.datatype) if size else 0
            if new != size:
                os.ftruncate(fd, new)
            if new == 0:
                _write_all(fd, header)
        except OSError:
            if fd is not None:
                os.close(fd)
            raise
        self.fd = fd
        self.opened = True

    # ---------------------------------------------------------------- writing
    def append(self, text: str, rows: int, mark: object = None) -> None:
        """Buffer whole rows. ``mark`` (e.g. the last trade seq in them) becomes
        ``durable_mark`` once these rows are written."""
        if not text:
            return
        data = text.encode()
        self._pending.append(data)
        self.pending_bytes += len(data)
        self.pending_rows += rows
        if mark is not None:
            self._marks.append((self.pending_bytes, mark))

    def flush(self) -> int:
        """Write the buffer; returns bytes written. Raises OSError, keeping what was not written."""
        if not self._pending:
            return 0
        self.ensure_open()
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        try:
            done = _write_all(self.fd, data)
        except OSError as exc:
            self._consume(data, getattr(exc, "written", 0))
            raise
        self._consume(data, done)
        return done

    def _consume(self, data: bytes, done: int) -> None:
        if not done:
            return
        self.bytes_written += done
        rest = data[done:]
        self._pending = [rest] if rest else []
        self.pending_bytes = len(rest)
        written_rows = self.pending_rows if not rest else data[:done].count(b"\n")
        self.rows_written += written_rows
        self.pending_rows -= written_rows
        self._mid_line = bool(rest) and data[done - 1:done] != b"\n"
        keep = []
        for end, mark in self._marks:
            if end <= done:
                self.durable_mark = mark
            else:
                keep.append((end - done, mark))
        self._marks = keep

    def drop_pending(self) -> int:
        """Forget buffered rows that could not be written, except the rest of a line
        a partial write began (the file keeps whole lines). Returns rows dropped."""
        if not self._pending:
            return 0
        data = b"".join(self._pending)
        keep = b""
        if self._mid_line:
            i = data.find(b"\n")
            keep = data[:i + 1] if i >= 0 else data
        dropped = self.pending_rows - (1 if keep else 0)
        self._pending = [keep] if keep else []
        self.pending_bytes = len(keep)
        self.pending_rows = 1 if keep else 0
        self._marks = []
        return max(0, dropped)

    def sync(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)

    def close(self) -> None:
        """Flush, fsync and close. Raises OSError (the file stays open for a retry)."""
        self.flush()
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None

    def abandon(self) -> None:
        """Close without flushing (shutdown after failed retries)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def _write_all(fd: int, data: bytes) -> int:
    """os.write until everything is written. An OSError raised after a partial
    write carries the bytes written so far in ``.written``."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, view[done:])
    except OSError as exc:
        exc.written = done
        raise
    return done


def repair_file(path: Path, datatype: str) -> None:
    """Repair the tail of a file that is not being appended to (a leftover of a crash)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        new = repaired_size(fd, size, datatype) if size else 0
        if new != size:
            os.ftruncate(fd, new)
            if new == 0:
                os.write(fd, HEADERS[datatype].encode())
    finally:
        os.close(fd)


def gzip_file(path: Path) -> Path:
    """Compress ``path`` to ``path.gz`` (fsynced, atomic rename), then remove ``path``."""
    gz = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    with open(path, "rb") as src, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, compresslevel=6, mtime=0) as out:
            shutil.copyfileobj(src, out, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, gz)
    _fsync_dir(path.parent)
    path.unlink()
    return gz


def _gunzip(gz: Path, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(gz, "rb") as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    gz.unlink()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
