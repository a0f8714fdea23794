"""The demo's narrator: follows the daily job's connection through the collections and
says, once each, when it turned at_risk, when the server dropped it and when the worker
found out, and then how much warning the exporter gave (pure: the demo feeds it
snapshots and times, it returns lines to print)."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model import State, TargetSnapshot


@dataclass(frozen=True, slots=True)
class Roles:
    """The worker's three connections, by local port."""

    daily: int
    report: int
    pool: int

    @classmethod
    def parse(cls, line: str) -> Roles | None:
        """From the worker's line ``connections daily=P report=P pool=P``."""
        words = line.split()
        if not words or words[0] != "connections":
            return None
        try:
            ports = {k: int(v) for k, v in (w.split("=", 1) for w in words[1:])}
            return cls(ports["daily"], ports["report"], ports["pool"])
        except (KeyError, ValueError):
            return None


class Story:
    def __init__(self, roles: Roles, *, risk_headroom: float, wait_timeout: float) -> None:
        self.roles = roles
        self.risk_headroom = risk_headroom
        self.wait_timeout = wait_timeout
        # Seconds since the demo started, when each was first seen.
        self.at_risk_at: float | None = None
        self.dropped_at: float | None = None
        self.noticed_at: float | None = None
        self.told_end = False

    def observe(self, target: TargetSnapshot, now: float) -> list[str]:
        """Lines to print after a collection at ``now``."""
        daily = next((i for i in target.items if i.socket.local.port == self.roles.daily), None)
        lines: list[str] = []
        if daily is None:
            return lines
        if daily.state is State.AT_RISK and self.at_risk_at is None and self.dropped_at is None:
            self.at_risk_at = now
            left = daily.headroom_seconds or 0.0
            lines.append(
                f"{now:5.0f}s  the daily job's connection is at_risk: {left:.0f}s left before "
                f"the server's wait_timeout ({self.wait_timeout:g}s) ends it; the alert "
                "MySQLIdleSessionsAboutToBeDropped would now start its 1m wait")
        if daily.state is State.DROPPED and self.dropped_at is None:
            self.dropped_at = now
            how = ("the server reset it (RST): the socket left the kernel's table"
                   if daily.socket.gone else "the server closed it (FIN): CLOSE_WAIT")
            lines.append(
                f"{now:5.0f}s  the daily job's connection is dropped: {how}, but the worker "
                "still holds it and does not know; its next query will fail")
        return lines

    def noticed(self, now: float, message: str) -> list[str]:
        """The worker's report that its query on the daily connection failed."""
        if self.noticed_at is not None:
            return []
        self.noticed_at = now
        return [f"{now:5.0f}s  the worker used the daily job's connection: {message}"]

    @property
    def complete(self) -> bool:
        return self.noticed_at is not None

    def ending(self) -> list[str]:
        """The lead time and the end of the story, once, when the worker has found out."""
        if not self.complete or self.told_end:
            return []
        self.told_end = True
        parts = []
        if self.at_risk_at is not None and self.dropped_at is not None:
            parts.append(f"at_risk {self.dropped_at - self.at_risk_at:.0f}s before the drop")
        if self.dropped_at is not None and self.noticed_at is not None:
            parts.append(f"dropped reported {self.noticed_at - self.dropped_at:.0f}s before "
                         "the worker noticed")
        lead = "; ".join(parts) if parts else "none: the exporter did not see it in time"
        return [
            "",
            f"Lead time the exporter gave: {lead}.",
            "The story is complete: the warning came before the drop, and the dead connection "
            "was reported before the application found out by failing.",
        ]
