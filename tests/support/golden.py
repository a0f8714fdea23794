"""Golden files: a whole output compared with the copy kept in tests/golden/.

A difference fails the test with a unified diff. After a change that is meant, rewrite the
files and review them in the commit's diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_exposition_golden.py
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
UPDATE_ENV = "UPDATE_GOLDEN"


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN_DIR / name
    if os.environ.get(UPDATE_ENV) == "1":
        path.write_text(text, encoding="utf-8")
        return
    if not path.is_file():
        pytest.fail(f"{path} is missing: write it with {UPDATE_ENV}=1 and review it", False)
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"golden/{name}", tofile="rendered"))
        pytest.fail(f"output differs from golden/{name} (if meant: {UPDATE_ENV}=1, then "
                    f"review the file's diff):\n{diff}", False)
