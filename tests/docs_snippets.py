"""The code blocks of README.md and docs/*.md that a reader pastes, found and named.

Every ```python, ```sh and ```toml block carries a marker on the line just above its fence:

    <!-- snippet: ID -->            run by tests/integration/test_docs_snippets.py (ID in RUN)
    <!-- snippet: illustrative -->  not meant to run as it is (a contract sketch, `make run` itself)

A ```toml block without a marker is loaded by the real config loader
(tests/unit/test_docs_snippet_markers.py). A python or sh block without a marker fails that test: add
the block to RUN and to the integration test's checks, or mark it illustrative.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANGS = ("python", "sh", "toml")
ILLUSTRATIVE = "illustrative"
_MARKER = re.compile(r"^<!--\s*snippet:\s*([\w.-]+)\s*-->$")

# ID -> what the integration test runs it against and asserts (the claim next to it in the docs)
RUN = {
    "readme-cli": "status, book and --json against the demo stack; print_books.py prints books and trades",
    "readme-websocket": "a snapshot, then deltas whose seq follows it one by one",
    "readme-csv": "today's CSV files read by pandas and converted by hftbacktest",
    "csv-pandas": "the book rebuilt from today's file has best bid < best ask",
    "csv-hftbacktest": "converted to an .npz and loaded into a backtest",
    "parquet-pandas": "the book rebuilt from the demo's Parquet dataset has best bid < best ask",
    "parquet-polars": "trades and volume per symbol of the demo's Parquet dataset",
    "parquet-duckdb": "trades and a VWAP per symbol of the demo's Parquet dataset",
    "raw-read": "the demo's raw recording: a pipeline-capture/1 header, ws frames and REST bodies",
    "websocket-client": "welcome, subscribed, a snapshot, then deltas with contiguous seq",
    "websocket-loadtest": "the load test runs against the demo's publisher and reports latency",
    "sim-run": "the sim serves on the port in its ready file and exits 0 on SIGINT",
    "sim-faults": "each fault request is accepted by that sim",
    "sim-venue-run": "the OKX sim serves on the port in its ready file and exits 0 on SIGINT",
    "grpc-example": "examples/grpc_books.py prints a snapshot, then deltas with contiguous seq, bid < ask",
    "grpc-python": "GetBook has bid < ask; SubscribeBooks gives a snapshot, then deltas with contiguous seq",
}


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    marker: str | None
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def snippets(path: Path) -> list[Snippet]:
    """The python, sh and toml blocks of one markdown file, with the marker above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if lang in LANGS:
            above = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            m = _MARKER.match(above)
            out.append(Snippet(path, start + 1, lang, m.group(1) if m else None, "\n".join(lines[start + 1:i]) + "\n"))
        i += 1
    return out


def all_snippets() -> list[Snippet]:
    return [s for p in doc_files() for s in snippets(p)]


def by_id(snippet_id: str) -> Snippet:
    (found,) = [s for s in all_snippets() if s.marker == snippet_id]
    return found
