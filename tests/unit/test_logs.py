"""Log lines: logfmt and JSON, one line each, exceptions reduced to their last line."""

from __future__ import annotations

import json
import logging

from exporter.logs import JsonFormatter, LogfmtFormatter


def record(msg: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            info = sys.exc_info()
    return logging.LogRecord("exporter.test", logging.WARNING, __file__, 1, msg, (), info)


def test_logfmt_quotes_what_needs_quoting() -> None:
    line = LogfmtFormatter().format(record('target down: "x" y'))
    assert "\n" not in line
    assert "level=warning logger=exporter.test" in line
    assert 'msg="target down: \\"x\\" y"' in line


def test_logfmt_plain_values_are_bare() -> None:
    assert LogfmtFormatter().format(record("ok")).endswith("msg=ok")


def test_json_is_one_object_with_the_last_exception_line() -> None:
    line = JsonFormatter().format(record("failed", exc=True))
    document = json.loads(line)
    assert document["msg"] == "failed" and document["level"] == "warning"
    assert document["error"] == "ValueError: boom"
    assert "Traceback" not in line
