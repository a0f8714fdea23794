"""One read, one statement, one row: the processlist packed by the server, unpacked here.

A processlist of 10,000 sessions fetched as 10,000 rows costs PyMySQL some 50 ms of Python
to decode, column by column. The same rows joined by the server into one string
(``GROUP_CONCAT``) arrive as one value and split in C: about half the wall time of the
whole fetch at 10,000 sessions (benchmarks/README.md). The same statement also carries the
global timeouts, so a read is one statement instead of two.

Fields are separated by ASCII unit separators; a row's idle time from its other fields,
and rows from each other, by record separators. User and database names may contain
those characters too, so the statement also counts its rows: a text whose row or field
count does not match (such a name), or that is as long as
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

# Each row packs as its idle time in milliseconds, then its other fields: the same from
# read to read while a session lives, so they are looked up rather than parsed again.
# Rows are joined by the same separator as the idle time and the fields, so one split
# of the text (in C) gives idle time, fields, idle time, fields, ... and slicing gives
# the idle times apart, for one map(float) (in C too).
_STATIC = ("id", "user", "host", "db", "command", "ip", "port", "wait_timeout", "trx_seconds",
           "rows_locked", "rows_modified")
_ALIAS = dict(zip(sources.COLUMNS, sources.ALIASES, strict=True))
_IDLE_MS = f"IFNULL(COALESCE({_ALIAS['time_ms']}, {_ALIAS['time']} * 1000), '')"
_FIELDS = f", '{FIELD}', ".join(
    f"IFNULL(CONCAT('=', {_ALIAS[name]}), '')" if name == "db" else f"IFNULL({_ALIAS[name]}, '')"
    for name in _STATIC
)
_ROW = f"{_IDLE_MS}, '{RECORD}', {_FIELDS}"

# What a row's static part says: the Session fields but the idle time (before it, and the
# transaction after it), or None for a row that needs the general conversion. A session in
# a transaction has a new static part at every read (its age grows): sessions in
# transactions are few, and cost a parse each.
_Static = tuple[
    int, Endpoint | None, str, str | None, str, float | None, tuple[float | None, int, int]
] | None


def compact_query(
    source: Source,
    client_ips: frozenset[str] | None,
    *,
    flavor: Flavor = Flavor.MARIADB,
    caps: Capabilities | None = None,
) -> Query:
    """The whole read as one statement: global ``wait_timeout``, ``interactive_timeout``,
    the number of sessions, the session's ``group_concat_max_len``, the sessions packed
    into one text (NULL when there is none): ``unpack``'s arguments in order from the
    third; then, on MariaDB, its three idle-transaction limits."""
    prefix, inner = sources.processlist_select(source, client_ips, flavor=flavor, caps=caps)
    extra = (
        f", {sources.MARIADB_TRANSACTION_TIMEOUTS_SQL}" if flavor is Flavor.MARIADB else ""
    )
    # Only constant text is joined here; the client addresses stay parameters.
    sql = (
        f"{prefix}SELECT {sources.TIMEOUTS_SQL},"  # noqa: S608
        f" COUNT(*), @@session.group_concat_max_len,"
        f" GROUP_CONCAT({_ROW} SEPARATOR '{RECORD}'){extra} FROM ({inner.sql}) AS processlist"
    )
    return Query(sql, inner.args)


class Unpacker:
    """Unpacks one target's packed processlists. Remembers the static part of each row it
    has seen (about 100 bytes per session, all forgotten at once when they outnumber the
    last read's rows twice over), so that a session seen before costs a dictionary lookup
    and its share of one map(float). One read at a time."""

    def __init__(self) -> None:
        self._known: dict[str, _Static] = {}

    def unpack(self, count: object, limit: object, packed: object) -> list[Session | None] | None:
        """The sessions in ``packed`` (None entries for rows without a usable id), or None
        when the text cannot be trusted: it does not hold ``count`` rows, a row has the
        wrong number of fields, or it is as long as ``limit`` (group_concat_max_len, in
        bytes), so the server may have cut it short."""
        if type(count) is not int or count < 0:
            return None
        parts = _records(packed, limit)
        # A separator inside a name adds a part: any such name shows in the count.
        if parts is None or len(parts) != 2 * count:
            return None
        times, statics = parts[0::2], parts[1::2]
        known = self._known
        if len(known) > 2 * count + 1024:  # forget sessions long gone, all at once
            known = self._known = {}
        lookup = known.get
        sessions: list[Session | None] = []
        append = sessions.append
        new_session = tuple.__new__  # Session(...) without its Python-level __new__
        unknown = _UNKNOWN
        for static_text, idle in zip(statics, _milliseconds(times), strict=True):
            static = lookup(static_text, unknown)
            if static is unknown:
                fields = static_text.split(FIELD)
                if len(fields) != len(_STATIC):
                    return None
                static = known[static_text] = _static(fields)
            if static is None:
                append(_typed(static_text.split(FIELD), idle))
                continue
            session_id, client, user, db, command, timeout, trx = static
            # No idle time (NULL) reads as 0, as in the row conversion.
            append(new_session(Session, (session_id, client, user, db, command,
                                         idle if idle is not None and idle > 0.0 else 0.0,
                                         timeout, *trx)))
        return sessions


def unpack(count: object, limit: object, packed: object) -> list[Session | None] | None:
    """``Unpacker.unpack`` without memory between reads."""
    return Unpacker().unpack(count, limit, packed)


def _records(packed: object, limit: object) -> list[str] | None:
    """A packed text's parts ([] for NULL: no row), or None when it cannot be trusted."""
    if packed is None:
        return []
    if isinstance(packed, bytes | bytearray):
        packed = bytes(packed).decode("utf-8", errors="replace")
    if not isinstance(packed, str) or _maybe_cut(packed, limit):
        return None
    return packed.split(RECORD)


def _milliseconds(texts: list[str]) -> list[float] | list[float | None]:
    """Idle seconds from millisecond texts; None for an empty or unusable one."""
    try:
        seconds = [ms / 1000.0 for ms in map(float, texts)]  # in C, but for the division
    except ValueError:  # an empty text (no idle time known), or not a number
        return [_seconds(text) for text in texts]
    total = sum(seconds)  # infinite or NaN when any value is, and then only
    if total - total == 0.0:
        return seconds
    return [_seconds(text) for text in texts]


def _seconds(text: str) -> float | None:
    milliseconds = sources.seconds_or_none(text) if text else None
    return None if milliseconds is None else milliseconds / 1000.0


def _maybe_cut(packed: str, limit: object) -> bool:
    if type(limit) is not int:
        return True
    # A UTF-8 character takes at most 4 bytes: encode only when it could matter.
    return len(packed) * 4 >= limit and len(packed.encode("utf-8", "replace")) + 4 >= limit


def _static(fields: Sequence[str]) -> _Static:
    """The static fields of one row, converted as ``sources.row_to_session`` converts the
    typed row the driver would have returned; None for a row it should convert itself."""
    (id_text, user, host, db, command, ip, port, wait_timeout, trx_seconds, rows_locked,
     rows_modified) = fields
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
        sources.transaction(trx_seconds or None, rows_locked or None, rows_modified or None),
    )


_UNKNOWN: _Static = (-1, None, "", None, "", None, (None, 0, 0))  # "not seen before"


def _typed(static: Sequence[str], idle: float | None) -> Session | None:
    """The odd row: the general conversion, with '' read back as NULL."""
    by_name = dict(zip(_STATIC, static, strict=True))
    values: list[object] = [by_name.get(name) or None for name in sources.COLUMNS]
    db = by_name["db"]
    values[sources.COLUMNS.index("db")] = db[1:] if db else None
    values[sources.COLUMNS.index("time")] = idle  # seconds, or None
    return sources.row_to_session(tuple(values))
