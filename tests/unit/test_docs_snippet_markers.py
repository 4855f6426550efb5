"""Every block a reader may paste from README.md and docs/*.md is either run by a test or marked
illustrative (tests/docs_snippets.py says how); every config block loads."""

from __future__ import annotations

import pytest

from docs_snippets import ILLUSTRATIVE, RUN, all_snippets, snippets
from pipeline.app.config import parse_config

SNIPPETS = all_snippets()


def test_every_python_and_sh_block_is_run_or_marked_illustrative():
    unmarked = [s.where for s in SNIPPETS if s.lang != "toml" and s.marker is None]
    assert not unmarked, (f"code blocks with no marker: {unmarked}; put `<!-- snippet: ID -->` (run by "
                          "tests/integration/test_docs_snippets.py) or `<!-- snippet: illustrative -->` above each")
    unknown = [(s.where, s.marker) for s in SNIPPETS if s.marker not in (None, ILLUSTRATIVE, *RUN)]
    assert not unknown, f"markers with no check in tests/docs_snippets.py RUN: {unknown}"
    ids = [s.marker for s in SNIPPETS if s.marker in RUN]
    assert sorted(ids) == sorted(RUN), "each RUN id marks exactly one block"


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.lang == "toml" and s.marker != ILLUSTRATIVE],
                         ids=lambda s: s.where)
def test_config_blocks_load(snippet, tmp_path):
    config = parse_config(snippet.text, tmp_path, snippet.where)  # as the CLI loads it (every registry)
    assert config.exchanges


def test_markers_are_found_on_the_line_above_the_fence(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- snippet: a-b -->\n\n```python\nprint(1)\n```\n\n```sh\nls\n```\n"
                   "```json\n{}\n```\n<!-- snippet: illustrative -->\n```toml\n[x]\n```\n")
    found = [(s.line, s.lang, s.marker, s.text) for s in snippets(doc)]
    assert found == [(3, "python", "a-b", "print(1)\n"), (7, "sh", None, "ls\n"),
                     (14, "toml", "illustrative", "[x]\n")]
