"""The status view (exporter.status) as plain text for a terminal: what
`mysql-idle-exporter inspect` prints.

Names come from outside (a process can call itself anything, a user or database name can
hold any character): control characters are shown escaped, never sent to the terminal,
and long values are cut in the table (``--json`` has them whole).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from exporter.status import SessionRow, StatusView, TargetView, format_duration

CELL_WIDTH = 32
COLUMNS = ("SOCKET", "PID", "PROCESS", "SESSION", "USER", "DB", "STATE", "TCP",
           "CLIENT IDLE", "SERVER IDLE", "TIMEOUT", "HEADROOM", "ADVICE")


def clean(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1) escaped as \\xNN."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or char == " " else _escape(char) for char in text
    )


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _cell(value: object, width: int = CELL_WIDTH) -> str:
    text = "-" if value is None else clean(str(value))
    return text if len(text) <= width else text[: width - 3] + "..."


def render_text(view: StatusView) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(view.generated_at))
    lines = [f"{clean(view.summary)}  ({stamp})"]
    if not view.targets:
        lines.append("no targets")
    for target in view.targets:
        lines.append("")
        lines.extend(_target_lines(target))
    return "\n".join(lines) + "\n"


def _target_lines(t: TargetView) -> list[str]:
    lines = [f"{_cell(t.target, 200)}  {_facts(t)}"]
    rows = [_row(s) for p in t.processes for s in p.sessions]
    if rows:
        lines.extend("  " + line for line in _table([COLUMNS, *rows]))
    else:
        lines.append("  no sockets to this target")
    for p in t.processes:
        if p.more:
            lines.append(f"  ... and {p.more} more of {_cell(p.process)} (see --json)")
    for drop in t.drops:
        cause = drop.cause or "unknown"
        lines.append(f"  drop: {_cell(drop.process)} lost {drop.count} idle "
                     f"{'session' if drop.count == 1 else 'sessions'} "
                     f"{format_duration(drop.ago)} ago (cause: {clean(cause)})")
    for notice in t.notices:
        lines.append(f"  ! {clean(notice.text)}")
        lines.append(f"    what to change: {notice.advice.text}")
        lines.append(f"    {notice.advice.url}")
    for p in t.processes:
        for tip in p.advice:
            lines.append(f"  > {_cell(p.process)}: {tip.text}")
            lines.append(f"    {tip.url}")
    return lines


def _facts(t: TargetView) -> str:
    if not t.up:
        return f"DOWN: {clean(t.error or 'unknown error')}"
    parts = ["up"]
    server = t.server
    if server is not None:
        flavor = {"mariadb": "MariaDB", "mysql": "MySQL"}.get(server.flavor or "", "server")
        parts.append(f"{flavor} {clean(server.version)}".strip())
        parts.append(server.source)
        scope = "per session" if server.per_session_timeouts else "global"
        parts.append(f"wait_timeout {format_duration(server.wait_timeout)} ({scope})")
    if t.network_idle_timeout is not None:
        parts.append(f"network idle limit {format_duration(t.network_idle_timeout)}")
    parts.append(f"at risk at {format_duration(t.risk_headroom)} of headroom or less")
    return ", ".join(parts)


def _row(s: SessionRow) -> tuple[str, ...]:
    return (
        _cell(s.local),
        _cell(s.pid),
        _cell(s.process),
        _cell(s.session_id),
        _cell(s.user),
        _cell(s.db),
        _cell(s.state.value),
        _cell(s.tcp_state),
        format_duration(s.client_idle),
        format_duration(s.server_idle),
        format_duration(s.timeout),
        format_duration(s.headroom),
        s.advice.short if s.advice is not None else "-",
    )


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]
