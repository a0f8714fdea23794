"""The status page's HTML, made from a status view (exporter.status). Every value is
HTML-escaped: process, user and database names are whatever the application (or an
attacker) chose. Imported by exporter/web/status.py at the first request for the page, so
an exporter that is only scraped does not hold it (resident memory, issue 17)."""

from __future__ import annotations

import html
import time
from urllib.parse import quote

from exporter.status import (
    STATE_LABELS,
    ProcessRow,
    SessionRow,
    StatusView,
    TargetView,
    format_duration,
)


def _e(value: object) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def _utc(at: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


def render_page(view: StatusView, *, refresh: int, metrics_path: str) -> str:
    """The whole page. Links are relative, so the page also works behind a path prefix."""
    age = view.collection_age
    meta = f'<meta http-equiv="refresh" content="{refresh}">\n' if refresh else ""
    if refresh:
        reload = f'reloads every {refresh}s (<a href="?refresh=0">stop</a>)'
    else:
        reload = 'does not reload (<a href="?">reload every 5s</a>)'
    targets = "\n".join(_target(t) for t in view.targets) or "<p>No targets.</p>"
    metrics = metrics_path.lstrip("/")
    shown_age = _e(format_duration(age or 0.0))
    collected = _e(_utc(view.generated_at - (age or 0.0)))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{meta}<title>mysql-idle-exporter: {_e(view.summary)}</title>
<link rel="stylesheet" href="static/status.css">
<script src="static/status.js" defer></script>
</head>
<body data-collection-age="{0.0 if age is None else round(age, 3)}">
<header>
<h1>mysql-idle-exporter</h1>
<p class="verdict verdict-{_e(view.verdict.value)}">{_e(view.summary)}</p>
<p class="meta">Collected <span id="age">{shown_age}</span> ago (at {collected}); this
page {reload}.
Version {_e(view.version)} &middot; <a href="{_e(metrics)}">{_e(metrics_path)}</a> &middot;
<a href="status.json">/status.json</a> &middot; <a href="healthz">/healthz</a></p>
</header>
<main>
{targets}
</main>
<footer><p>Riskiest first. <b>Headroom</b> is the time left before the server (or the
network path) drops an idle session: its timeout minus how long it has been idle.
<b>Dropped</b> sessions are already dead while their process still holds them: its next
query on them fails with 2006/2013.</p></footer>
</body>
</html>
"""


def _target(t: TargetView) -> str:
    badge = "up" if t.up else "down"
    parts = [
        '<section class="target">',
        f'<h2>{_e(t.target)} <span class="badge badge-{badge}">{badge}</span> '
        f'<a class="probe" href="probe?target={_e(quote(t.target, safe=""))}">metrics</a></h2>',
        f'<p class="facts">{_facts(t)}</p>',
    ]
    if t.notices:
        parts.append('<ul class="notices">')
        for notice in t.notices:
            parts.append(
                f'<li class="notice" data-key="{_e(notice.key)}">{_e(notice.text)} '
                f'<span class="advice">What to change: {_e(notice.advice.text)} '
                f'<a href="{_e(notice.advice.url)}">{notice.advice.source}</a></span></li>'
            )
        parts.append("</ul>")
    parts.append(_sessions(t))
    parts.append(_drops(t))
    parts.append("</section>")
    return "\n".join(parts)


def _facts(t: TargetView) -> str:
    if not t.up:
        return f"The server could not be read: {_e(t.error)}"
    items = []
    server = t.server
    if server is not None:
        flavor = {"mariadb": "MariaDB", "mysql": "MySQL"}.get(server.flavor or "", "server")
        items.append(f"{flavor} {_e(server.version)}")
        items.append(f"sessions read from {_e(server.source)}")
        scope = ("each session's own value" if server.per_session_timeouts
                 else "the global value; sessions' own values are not readable here")
        items.append(f"wait_timeout {_e(format_duration(server.wait_timeout))} ({scope})")
    if t.network_idle_timeout is not None:
        items.append(f"network idle limit {_e(format_duration(t.network_idle_timeout))}")
    items.append(f"at risk at {_e(format_duration(t.risk_headroom))} of headroom or less")
    return " &middot; ".join(items)


_HEAD = ("process", "pid", "socket", "session", "user", "db", "state", "client idle",
         "server idle", "timeout", "headroom", "what to do")


def _sessions(t: TargetView) -> str:
    if not t.processes:
        return '<p class="empty">No sockets to this target.</p>'
    head = "".join(f"<th scope=\"col\">{_e(h)}</th>" for h in _HEAD)
    bodies = [_process(p) for p in t.processes]
    return (
        '<table class="sessions">\n<caption>Who holds which sessions</caption>\n'
        f"<thead><tr>{head}</tr></thead>\n" + "\n".join(bodies) + "\n</table>"
    )


def _process(p: ProcessRow) -> str:
    counts = ", ".join(f"{n} {STATE_LABELS[s]}" for s, n in p.counts.items()) or "no sockets"
    drops = f"; {p.drops} dropped in the last hour" if p.drops else ""
    tips = "".join(
        f'<br><span class="advice">{_e(tip.text)} <a href="{_e(tip.url)}">{tip.source}</a></span>'
        for tip in p.advice
    )
    worst = p.worst.value if p.worst is not None else "none"
    rows = [
        f'<tbody class="process" data-process="{_e(p.process)}">',
        f'<tr class="process-head worst-{_e(worst)}"><th colspan="{len(_HEAD)}" '
        f'scope="rowgroup"><span class="name">{_e(p.process)}</span> '
        f"<span class=\"counts\">{_e(counts)}{_e(drops)}</span>{tips}</th></tr>",
    ]
    rows.extend(_session(s) for s in p.sessions)
    if p.more:
        rows.append(f'<tr class="more"><td colspan="{len(_HEAD)}">and {p.more} more '
                    "(see /status.json)</td></tr>")
    rows.append("</tbody>")
    return "\n".join(rows)


_TCP_NOTES = {
    "gone": "the server reset the connection: the socket left the kernel's table while "
            "the process still holds it",
    "CLOSE_WAIT": "the server closed the connection; the process has not",
}


def _session(s: SessionRow) -> str:
    headroom = _e(format_duration(s.headroom))
    if s.headroom is not None:
        cell = f'<td class="headroom" data-headroom="{round(s.headroom, 3)}">{headroom}</td>'
    else:
        cell = f'<td class="headroom">{headroom}</td>'
    tcp = "" if s.tcp_state == "ESTABLISHED" else (
        f' <span class="tcp" title="{_e(_TCP_NOTES.get(s.tcp_state, "TCP state"))}">'
        f"{_e(s.tcp_state)}</span>")
    return (
        f'<tr class="session state-{s.state.value}" data-state="{s.state.value}">'
        f'<td class="process">{_e(s.process)}</td>'
        f'<td class="pid">{_e(s.pid)}</td>'
        f'<td class="socket">{_e(s.local)}{tcp}</td>'
        f'<td class="session-id">{_e(s.session_id)}</td>'
        f'<td class="user">{_e(s.user)}</td>'
        f'<td class="db">{_e(s.db)}</td>'
        f'<td class="state">{_e(STATE_LABELS[s.state])}</td>'
        f'<td class="idle">{_e(format_duration(s.client_idle))}</td>'
        f'<td class="idle">{_e(format_duration(s.server_idle))}</td>'
        f'<td class="timeout">{_e(format_duration(s.timeout))}</td>'
        f"{cell}"
        f'<td class="todo">{_e(s.advice.short if s.advice is not None else "")}</td></tr>'
    )


def _drops(t: TargetView) -> str:
    if not t.drops:
        return '<p class="drops-none">No session of this target died idle in the last hour.</p>'
    rows = "\n".join(
        f'<tr class="drop"><td>{_e(format_duration(d.ago))} ago ({_e(_utc(d.at))})</td>'
        f'<td class="process">{_e(d.process)}</td><td>{d.count}</td>'
        f'<td class="cause">{_e(d.cause or "unknown")}</td></tr>'
        for d in t.drops
    )
    return (
        '<table class="drops">\n<caption>Sessions that died idle in the last hour</caption>\n'
        '<thead><tr><th scope="col">when</th><th scope="col">process</th>'
        '<th scope="col">sessions</th><th scope="col">cause</th></tr></thead>\n'
        f"<tbody>\n{rows}\n</tbody>\n</table>"
    )
