"""Where a scrape's time goes, from py-spy's raw (collapsed) stacks.

    .venv/bin/python -m benchmarks.profile_summary benchmarks/results/profile-....txt

Each sample is put in the phase of the exporter whose function is on its stack (the
phases of mysql_idle_scrape_duration_seconds, plus `summary` for the per-process totals,
`plan` for choosing a target's sockets and deciding on a read, `render` for building the
/metrics body and `http/loop` for the rest of the event loop); within a phase, the frames with
the most samples (inclusive) and the lines that were running (self) are listed.
Samples of threads waiting for work (idle pool threads, the event loop's selector) are
left out.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# First match wins, from the innermost frame of these outward.
PHASE_MARKERS = (
    ("owners", ("OwnerMap.", "ProcessNames.")),
    ("sockets", ("SocketReader._list", "dump_tcp")),
    ("sockets: build", ("SocketReader.read",)),
    ("server", ("SessionReader.read",)),
    ("correlate", ("correlate (", "connection_key")),
    ("summary", ("summarise (",)),
    ("plan", ("plan (exporter/planner", "settle (", "live_connections (")),
    ("render", ("render (", "SnapshotCollector", "generate_latest", "exporter/exposition.py",
                "exporter/collector.py")),
    ("collect: other", ("Engine._collect", "collect_target (")),
)
# Waiting, not working: idle pool threads, the event loop's selector, and a read blocked
# in recv until the database answers (py-spy counts that thread as running).
IDLE_LEAVES = ("select (selectors.py", "_worker (concurrent/futures/thread.py:81)",
               "wait (threading.py", "epoll", "readinto (socket.py")
# Frames every stack of a thread or of the event loop has: not worth listing.
_PLUMBING = ("threading.py", "concurrent/futures", "asyncio/", "runpy", "exporter/cli.py",
             "exporter/launch.py",
             "exporter/__main__.py", "aiohttp/", "exporter/web/app.py")
REPO = Path(__file__).resolve().parent.parent  # frames are shown relative to it
_FRAME = re.compile(r"^(?P<func>.*) \((?P<where>[^()]*)\)$")


def short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    where = match["where"]
    for prefix in (f"{REPO}/", "site-packages/"):
        where = where.split(prefix)[-1]
    return f"{match['func']} ({where})"


def phase_of(frames: list[str]) -> str:
    for phase, markers in PHASE_MARKERS:
        if any(marker in frame for frame in frames for marker in markers):
            return phase
    return "http/loop"


def summarise(raw: Path, top: int = 8) -> dict[str, Any]:
    per_phase: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = {}
    own: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first "frame" names the thread
        if not frames or any(idle in frames[-1] for idle in IDLE_LEAVES):
            continue
        total += count
        phase = phase_of(frames)
        per_phase[phase] += count
        for frame in {short(f) for f in frames}:
            inclusive.setdefault(phase, Counter())[frame] += count
        own.setdefault(phase, Counter())[short(frames[-1])] += count
    phases = {}
    for phase, samples in per_phase.most_common():
        phases[phase] = {
            "share": round(samples / total, 3),
            "inclusive": [(f, round(n / total, 3)) for f, n in inclusive[phase].most_common()
                          if not any(noise in f for noise in _PLUMBING)][:top],
            "self": [(f, round(n / total, 3)) for f, n in own[phase].most_common(top)],
        }
    return {"samples": total, "phases": phases}


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary['samples']} busy samples"]
    for phase, data in summary["phases"].items():
        lines.append(f"\n{phase}: {data['share']:.0%} of busy samples")
        lines.append("  inclusive: " + "; ".join(f"{f} {s:.0%}" for f, s in data["inclusive"]))
        lines.append("  self:      " + "; ".join(f"{f} {s:.0%}" for f, s in data["self"]))
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(f"== {path}")
        print(render(summarise(Path(path))))
