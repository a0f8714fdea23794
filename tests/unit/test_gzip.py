"""gzip: Prometheus sends `Accept-Encoding: gzip` on every scrape; the answer comes
compressed, and decompresses to the same exposition a plain scrape gets."""

from __future__ import annotations

import gzip
import urllib.request
from collections.abc import Iterator

import pytest

from exporter.web.compression import accepts_gzip
from tests.support.exporter_process import ExporterProcess, parse

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.mark.parametrize(
    "header,expected",
    [
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate", True),
        ("deflate, gzip;q=1.0, *;q=0.5", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("deflate", False),
        ("", False),
        (None, False),
        ("gzip;q=nonsense", False),
    ],
)
def test_accept_encoding(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


@pytest.fixture(scope="module")
def exporter() -> Iterator[ExporterProcess]:
    # Port 1 on loopback refuses at once: a target that is down is enough to render.
    with ExporterProcess(["--mysql.address=127.0.0.1:1", "--mysql.user=u"],
                         env={"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"}) as process:
        process.scrape()  # series that appear from the second scrape on (render duration)
        yield process


def fetch(exporter: ExporterProcess, headers: dict[str, str]) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(exporter.base + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=15) as response:  # urllib never decompresses
        return dict(response.headers), response.read()


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return set(parse(text).samples)


@pytest.mark.parametrize("accept", [None, OPENMETRICS])
def test_a_gzip_scrape_decompresses_to_the_same_exposition(
    exporter: ExporterProcess, accept: str | None,
) -> None:
    extra = {"Accept": accept} if accept else {}
    plain_headers, plain = fetch(exporter, extra)
    zipped_headers, zipped = fetch(exporter, {**extra, "Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain_headers
    assert zipped_headers.get("Content-Encoding") == "gzip", zipped_headers
    assert "Accept-Encoding" in zipped_headers.get("Vary", ""), zipped_headers
    assert zipped_headers["Content-Type"] == plain_headers["Content-Type"]
    text = gzip.decompress(zipped).decode()
    assert len(zipped) < len(plain) / 3, (len(zipped), len(plain))
    # Values move between scrapes (CPU, collections); the series must not.
    assert series(text) == series(plain.decode())
    if accept:
        assert text.rstrip().endswith("# EOF")


def test_a_client_that_refuses_gzip_gets_plain_text(exporter: ExporterProcess) -> None:
    headers, body = fetch(exporter, {"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in headers
    assert body.startswith(b"# HELP")
