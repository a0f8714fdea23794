"""One read, one statement, one row: the processlist packed by the server, unpacked here.

A processlist of 10,000 sessions fetched as 10,000 rows costs PyMySQL some 50 ms of Python
to decode, column by column. The same rows joined by the server into one string
(``GROUP_CONCAT``) arrive as one value and split in C: about half the wall time of the
whole fetch at 10,000 sessions (benchmarks/README.md). The same statement also carries the
global timeouts, so a read is one statement instead of two.

Fields are separated by ASCII unit separators and rows by record separators. User and
database names may contain those characters too, so the statement also counts its rows:
a text whose row or field count does not match (such a name), or that is as long as
``group_concat_max_len`` (which the connection raises to 1 GiB; the server would have cut
it), is refused (``None``) and the caller reads the same rows one by one. A database name
is sent with a leading ``=`` so that NULL (no database) and an empty name differ.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.model import Endpoint, Flavor, Session
from exporter.sessions import sources
from exporter.sessions.sources import Capabilities, Query, Source

FIELD = "\x1f"  # ASCII unit separator
RECORD = "\x1e"  # ASCII record separator

# Long enough for any processlist the server can send in one packet (max_allowed_packet
# is at most 1 GiB); set once per connection, at connect time.
GROUP_CONCAT_MAX_LEN = 1 << 30

# The fields in this order: the idle times last, so that the rest of a row, the same from
# read to read while a session lives, can be looked up instead of parsed again.
_STATIC = ("id", "user", "host", "db", "command", "ip", "port", "wait_timeout")
_LAYOUT = (*_STATIC, "time", "time_ms")
_ALIAS = dict(zip(sources.COLUMNS, sources.ALIASES, strict=True))
_FIELDS = f", '{FIELD}', ".join(
    f"IFNULL(CONCAT('=', {_ALIAS[name]}), '')" if name == "db" else f"IFNULL({_ALIAS[name]}, '')"
    for name in _LAYOUT
)

# What a row's static part says: the Session fields but the idle time, or None for a row
# that needs the general conversion.
_Static = tuple[int, Endpoint | None, str, str | None, str, float | None] | None


def compact_query(
    source: Source,
    client_ips: frozenset[str] | None,
    *,
    flavor: Flavor = Flavor.MARIADB,
    caps: Capabilities | None = None,
) -> Query:
    """The whole read as one statement: global ``wait_timeout``, ``interactive_timeout``,
    the number of sessions, the session's ``group_concat_max_len`` and the sessions packed
    into one text (NULL when none): ``unpack``'s arguments in order from the third."""
    prefix, inner = sources.processlist_select(source, client_ips, flavor=flavor, caps=caps)
    # Only constant text is joined here; the client addresses stay parameters.
    sql = (
        f"{prefix}SELECT @@global.wait_timeout, @@global.interactive_timeout,"  # noqa: S608
        f" COUNT(*), @@session.group_concat_max_len,"
        f" GROUP_CONCAT({_FIELDS} SEPARATOR '{RECORD}') FROM ({inner.sql}) AS processlist"
    )
    return Query(sql, inner.args)


class Unpacker:
    """Unpacks one target's packed processlists. Remembers the static part of each row of
    the last read (about 100 bytes per session), so that a session seen before costs a
    dictionary lookup and one float conversion. One read at a time."""

    def __init__(self) -> None:
        self._known: dict[str, _Static] = {}

    def unpack(
        self, count: object, limit: object, packed: object
    ) -> list[Session | None] | None:
        """The sessions in ``packed`` (None entries for rows without a usable id), or None
        when the text cannot be trusted: its row count differs from ``count``, a row has
        the wrong number of fields, or it is as long as ``limit`` (group_concat_max_len,
        in bytes), so the server may have cut it short within the last row."""
        if type(count) is not int or count < 0:
            return None
        if packed is None or packed == "" or packed == b"":
            return [] if count == 0 else None
        if isinstance(packed, bytes | bytearray):
            packed = bytes(packed).decode("utf-8", errors="replace")
        if not isinstance(packed, str) or _maybe_cut(packed, limit):
            return None
        records = packed.split(RECORD)
        if len(records) != count:
            return None
        known, seen = self._known, {}
        sessions: list[Session | None] = []
        append = sessions.append
        new_session = tuple.__new__  # Session(...) without its Python-level __new__
        for record in records:
            parts = record.rsplit(FIELD, 2)
            if len(parts) != 3:
                return None
            static_text, time_s, time_ms = parts
            static = known.get(static_text, _UNKNOWN)
            if static is _UNKNOWN:
                fields = static_text.split(FIELD)
                if len(fields) != len(_STATIC):
                    return None
                static = _static(fields)
            seen[static_text] = static
            try:
                idle = float(time_ms) / 1000.0 if time_ms else float(time_s) if time_s else 0.0
            except ValueError:
                idle = _NAN
            if static is None or idle != idle or idle in (_INF, -_INF):
                append(_typed(static_text.split(FIELD), time_s, time_ms))
                continue
            session_id, client, user, db, command, timeout = static
            append(new_session(Session, (session_id, client, user, db, command,
                                         idle if idle > 0.0 else 0.0, timeout)))
        self._known = seen  # only the last read's rows: memory follows the sessions
        return sessions


def unpack(count: object, limit: object, packed: object) -> list[Session | None] | None:
    """``Unpacker.unpack`` without memory between reads."""
    return Unpacker().unpack(count, limit, packed)


def _maybe_cut(packed: str, limit: object) -> bool:
    if type(limit) is not int:
        return True
    # A UTF-8 character takes at most 4 bytes: encode only when it could matter.
    return len(packed) * 4 >= limit and len(packed.encode("utf-8", "replace")) + 4 >= limit


def _static(fields: Sequence[str]) -> _Static:
    """The static fields of one row, converted as ``sources.row_to_session`` converts the
    typed row the driver would have returned; None for a row it should convert itself."""
    id_text, user, host, db, command, ip, port, wait_timeout = fields
    try:
        session_id = int(id_text)
    except ValueError:
        return None
    if session_id < 0:
        return None
    client = sources.client_endpoint(host, ip, port) if ip else sources.host_endpoint(host)
    timeout = sources.seconds_or_none(wait_timeout) if wait_timeout else None
    return (
        session_id,
        client,
        user,
        db[1:] if db else None,
        command,
        timeout if timeout is not None and timeout > 0 else None,
    )


_INF = float("inf")
_NAN = float("nan")
_UNKNOWN: _Static = (-1, None, "", None, "", None)  # a sentinel for "not seen before"


def _typed(static: Sequence[str], time_s: str, time_ms: str) -> Session | None:
    """The odd row: the general conversion, with '' read back as NULL."""
    by_name = dict(zip(_LAYOUT, (*static, time_s, time_ms), strict=True))
    values: list[object] = [by_name[name] or None for name in sources.COLUMNS]
    db = by_name["db"]
    values[sources.COLUMNS.index("db")] = db[1:] if db else None
    return sources.row_to_session(tuple(values))
