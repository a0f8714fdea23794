"""Runs the real exporter command in a subprocess and reads its metrics, for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter.throwaway import free_port

Labels = tuple[tuple[str, str], ...]


@dataclass
class Metrics:
    samples: dict[tuple[str, Labels], float]
    text: str

    def get(self, name: str, **labels: str) -> float | None:
        """The value of the one sample with exactly these labels (None if absent)."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Every sample of `name` whose labels include `labels`."""
        found = []
        for (sample_name, sample_labels), value in self.samples.items():
            as_dict = dict(sample_labels)
            if sample_name == name and all(as_dict.get(k) == v for k, v in labels.items()):
                found.append((as_dict, value))
        return found

    def total(self, name: str, **labels: str) -> float:
        return sum(value for _, value in self.find(name, **labels))


def parse(text: str) -> Metrics:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Metrics(samples, text)


class ExporterProcess:
    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = [sys.executable, "-m", "exporter",
                     f"--web.listen-address=127.0.0.1:{self.port}", *args]
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> ExporterProcess:
        self.process = subprocess.Popen(
            self.args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exporter exited at start: {self.process.stdout.read()}")
            try:
                self.get("/healthz", timeout=1)
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("exporter did not answer /healthz in time")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def get(self, path: str, headers: Mapping[str, str] | None = None,
            timeout: float = 15.0) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def scrape(self, path: str = "/metrics", headers: Mapping[str, str] | None = None
               ) -> Metrics:
        status, body = self.get(path, headers)
        assert status == 200, f"{path} answered {status}: {body}"
        return parse(body)

    def stop(self) -> str:
        if self.process is None:
            return ""
        self.process.terminate()
        try:
            output, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        self.process = None
        return output or ""

    def __enter__(self) -> ExporterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Worker:
    """tests/support/worker.py in a subprocess, named `name`.

    The kernel keeps 15 bytes of a process's name (comm); psutil, and so the exporter,
    completes a cut name from the first word of the command line. A longer name is
    therefore also given as the process's argv[0] (its interpreter then finds the
    packages through PYTHONPATH, since it cannot tell its virtualenv from that name)."""

    def __init__(self, name: str, host: str, port: int, user: str, password: str,
                 connections: int = 1, *, interactive: bool = False) -> None:
        env = {**os.environ, "WORKER_PASSWORD": password}
        if interactive:
            env["WORKER_INTERACTIVE"] = "1"
        argv0, extra = sys.executable, {}
        if len(name.encode()) > 15:
            argv0, extra = name, {"executable": sys.executable}
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.process = self._spawn(
            [argv0, "-m", "tests.support.worker", name, host, str(port), user,
             str(connections)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, **extra,
        )
        ready = self._line()
        assert ready.startswith("ready"), ready
        self.ports = [int(p) for p in ready.split()[1:]]

    def _spawn(self, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[str]:
        """Where the worker runs; subclasses start it elsewhere (another namespace)."""
        return subprocess.Popen(argv, **popen_kwargs)

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("worker exited")
        return line.strip()

    def send(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._line()

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
