"""The session side: what the database server says about its client sessions."""

from exporter.sessions.connection import (
    ConnectFailed,
    ConnectionInfo,
    ConnectionLost,
    QueryFailed,
    ServerConnection,
    ServerError,
    ServerTimeout,
)
from exporter.sessions.credentials import (
    PASSWORD_ENV,
    ConfigError,
    Credentials,
    SslMode,
    SslOptions,
    load_credentials,
)
from exporter.sessions.reader import SessionReader
from exporter.sessions.sources import Capabilities, Prefer, Source, SourceUnavailable
from exporter.timeouts import OWN_WAIT_TIMEOUT

__all__ = [
    "OWN_WAIT_TIMEOUT",
    "PASSWORD_ENV",
    "Capabilities",
    "ConfigError",
    "ConnectFailed",
    "ConnectionInfo",
    "ConnectionLost",
    "Credentials",
    "Prefer",
    "QueryFailed",
    "ServerConnection",
    "ServerError",
    "ServerTimeout",
    "SessionReader",
    "Source",
    "SourceUnavailable",
    "SslMode",
    "SslOptions",
    "load_credentials",
]
