"""gzip: Prometheus sends `Accept-Encoding: gzip` on every scrape; the answer comes
compressed, and decompresses to the same exposition a plain scrape gets."""

from __future__ import annotations

import gzip
import urllib.request
from collections.abc import Iterator

import pytest

from exporter.web.compression import accepts_gzip, gzip_body, window_bits
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


@pytest.mark.parametrize(
    "size,bits",
    [(1, 9), (512, 9), (513, 10), (10_513, 14), (16_384, 14), (16_385, 15), (32_768, 15),
     (3_000_000, 15)],
)
def test_the_window_holds_the_whole_body_up_to_zlibs_largest(size: int, bits: int) -> None:
    assert window_bits(size) == bits


@pytest.mark.parametrize("size", [1, 1024, 10_513, 16_385, 200_000])
def test_a_gzipped_body_is_one_gzip_member_with_mtime_zero(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    packed = gzip_body(body)
    assert gzip.decompress(packed) == body
    assert packed[:4] == b"\x1f\x8b\x08\x00" and packed[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert gzip_body(body) == packed  # the same body, the same bytes
