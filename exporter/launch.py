"""The command's entry point (`mysql-idle-exporter`, `python -m exporter`): imports aiohttp
without the CA bundle its HTTP client loads, then runs exporter.cli.

aiohttp builds its client's default TLS context when it is imported, and that context
loads the system's CA bundle: 1.8-2 MiB resident for the life of the process. The exporter
uses only aiohttp's server; its own TLS contexts (the web config file's, PyMySQL's, the
fleet client's urllib) are made later, each from its own settings. So aiohttp is imported
here with SSL_CERT_FILE pointing at an empty file, and the variable is put back at once:
an aiohttp client in this process would trust no certificate (it fails closed), nothing
else sees a difference.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

CERT_FILE_ENV = "SSL_CERT_FILE"


def import_aiohttp_server_only() -> None:
    """Import aiohttp.web, its client's default context loading no CA certificates.
    Nothing to do when aiohttp is already imported (tests, an embedding program)."""
    if "aiohttp" in sys.modules:
        return
    saved = os.environ.get(CERT_FILE_ENV)
    os.environ[CERT_FILE_ENV] = os.devnull
    try:
        import aiohttp.web  # noqa: F401
    finally:
        if saved is None:
            del os.environ[CERT_FILE_ENV]
        else:
            os.environ[CERT_FILE_ENV] = saved


def main(argv: Sequence[str] | None = None) -> int:
    import_aiohttp_server_only()
    from exporter.cli import main as run

    return run(argv)
