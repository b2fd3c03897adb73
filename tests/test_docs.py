"""Every ```python block of README.md and docs/*.md runs here, page by page, in a fresh folder.

A page's blocks share one namespace, in order, as a reader runs them. The markdown source (not the rendered page)
can carry three kinds of HTML comments for the test:
- `<!-- invisible-code-block: python ... -->`: code run but not shown, to check a block's values;
- inside it, `substitute({"steps=4000": "steps=40"})`: string replacements applied to the next block (small
  settings where the page shows real ones; a replacement whose text is not in the block fails the test);
- `<!-- skip: next "reason" -->`: the next block is not run, for the reason given (few, see the last test).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest
import unittest.mock
from pathlib import Path

import pytest
import torch
from sybil import Example, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SUBSTITUTIONS = "__doc_substitutions__"


def run_block(example: Example) -> None:
    """Exec one block in its page's namespace after the replacements the invisible block before it asked for."""
    source = str(example.parsed)
    for old, new in example.namespace.pop(SUBSTITUTIONS, {}).items():
        assert old in source, f"{example.path}:{example.line}: substitute {old!r}: not in the block"
        source = source.replace(old, new)
    code = compile(pad(source, example.line + example.parsed.line_offset), example.path, "exec", dont_inherit=True)
    exec(code, example.namespace)


def run_page(page: str) -> list[str]:
    """Run every block of `page` (relative to the repository root) in the current folder; returns skip reasons."""
    sybil = Sybil(parsers=[CodeBlockParser("python", run_block), SkipParser()], path=str(ROOT))
    document = sybil.parse(ROOT / page)

    def substitute(replacements: dict[str, str]) -> None:
        document.namespace[SUBSTITUTIONS] = replacements

    document.namespace.update(substitute=substitute, __name__="__doc__")
    skipped = []
    for example in document:
        try:
            example.evaluate()
        except unittest.SkipTest as skip:
            skipped.append(str(skip))
    assert SUBSTITUTIONS not in document.namespace, f"{page}: substitute() with no block after it"
    return skipped


SLOW = {
    "docs/adapters.md",
    "docs/reproduction.md",
    "docs/digits.md",
    "docs/pareto-merging.md",
    "docs/checkpoints.md",
    "docs/indicators.md",
    "docs/transformers.md",
}  # over a few seconds (under load)
DIGITS = {"docs/digits.md", "docs/pareto-merging.md", "docs/reproduction-pareto-merging.md"}  # the digits problem
HUB = {"docs/adapters.md", "docs/reproduction.md"}  # read CLIP and its data from the Hugging Face cache


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW else p for p in PAGES])
def test_page_runs(page, tmp_path, monkeypatch, request):
    """The page's blocks run in order in an empty folder and pass the checks its invisible blocks make."""
    if page in DIGITS:
        # built once a session, in a temporary $MOOFRAME_CACHE; a fast page only runs code, on a small build
        request.getfixturevalue("digits_cache" if page in SLOW else "small_digits_cache")
    else:
        monkeypatch.setenv("MOOFRAME_CACHE", str(tmp_path / "mooframe-cache"))  # never the user's cache
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if page in HUB:
        from tests.test_reproduce import _hub_cache

        env = {**os.environ, "HF_HOME": str(_hub_cache(tmp_path)), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "tests.test_docs", page]
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert finished.returncode == 0, finished.stderr[-3000:]
        skipped = [line for line in finished.stdout.splitlines() if line.startswith("skipped:")]
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the pages' models are tiny: one thread is faster than two contending
        try:
            with unittest.mock.patch.dict(os.environ):  # a page may set a variable (RANK, ...) for itself
                skipped = run_page(page)
        finally:
            torch.set_num_threads(threads)
    assert len(skipped) == (ROOT / page).read_text().count("<!-- skip: next")


def test_every_page_has_blocks_and_few_are_skipped_each_with_a_reason():
    pages = {page: (ROOT / page).read_text() for page in PAGES}
    blocks = sum(text.count("```python") for text in pages.values())
    skips = [re.findall(r'<!-- skip: next "([^"]+)" -->', text) for text in pages.values()]
    assert blocks >= 20 and sum(len(s) for s in skips) <= 3
    assert sum(text.count("<!-- skip:") for text in pages.values()) == sum(len(s) for s in skips)  # all have reasons


if __name__ == "__main__":  # python -m tests.test_docs PAGE: one page in a fresh process (pages that need the hub)
    for reason in run_page(sys.argv[1]):
        print("skipped:", reason)
