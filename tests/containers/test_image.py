"""The image, built from the Dockerfile by a real engine and run: its user, its size, a
read-only root file system, and its start-up time to the first /metrics answer.

Costs (this machine): the base image once per machine (debootstrap, about 50 s; cached in
~/.cache/mysql-idle-exporter/images/), then per run its import (about 5 s) and the build
(about 15 s, PyPI included); the run test about 2 s.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

from tests.support.containers import (
    ENGINE_PACKAGES,
    REPO,
    BaseImage,
    BuiltImage,
    Podman,
    engine_failure,
    missing_packages,
    require_engine,
)
from tests.support.pods import NamespaceClient, attach_netns, detach_netns

# Bounds that catch a regression without flaking on a busy machine. The image is the base
# (183 MB here; python:3.11-slim is about 130 MB) plus the exporter's venv (about 22 MB) and
# the standard library's bytecode at the image's optimization level (about 11 MB).
MAX_EXPORTER_LAYER_BYTES = 40_000_000
MAX_STARTUP_SECONDS = 10.0


def test_without_an_engine_the_failure_says_what_to_install() -> None:
    nothing = missing_packages(lambda command: None)
    assert nothing == list(ENGINE_PACKAGES)
    message = engine_failure(nothing)
    for package in ENGINE_PACKAGES:
        assert package in message
    assert "scripts/setup" in message and "never skipped" in message
    assert missing_packages(lambda command: f"/usr/bin/{command}") == []
    # The fixtures' check fails the test (never skips it) with that message.
    with pytest.raises(pytest.fail.Exception) as failure:
        require_engine(lambda command: None if command == "podman" else f"/usr/bin/{command}")
    assert str(failure.value) == engine_failure(["podman"])


def test_the_image_builds_on_the_base_and_runs_as_65532(
    podman: Podman, base_image: BaseImage, image: BuiltImage
) -> None:
    config = podman.image_config(image.tag)
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["mysql-idle-exporter"]
    assert "9864/tcp" in config["ExposedPorts"]  # type: ignore[operator]
    base_size = podman.image_size(base_image.tag)
    assert image.size_bytes - base_size < MAX_EXPORTER_LAYER_BYTES
    print(f"\nimage: {image.size_bytes / 1e6:.0f} MB ({(image.size_bytes - base_size) / 1e6:.0f} "
          f"MB over the base), built in {image.seconds:.1f} s; base imported in "
          f"{base_image.import_seconds:.1f} s" + (
              f", made in {base_image.debootstrap_seconds:.0f} s"
              if base_image.debootstrap_seconds is not None else " (cached)"))


@contextlib.contextmanager
def running(podman: Podman, image: BuiltImage,
            env: Sequence[str] = ()) -> Iterator[tuple[str, int, NamespaceClient, float]]:
    """The image run as a sidecar's security context would run it: read-only, no writable
    path at all (not even /tmp), no capability, no network but loopback. Yields the
    container's name, its host pid, a client in its network namespace, and the seconds from
    `podman run` to the first /metrics answer."""
    name = f"mie-image-{secrets.token_hex(3)}"
    netns = f"{name}-net"
    started = time.monotonic()
    podman.run("run", "--detach", "--name", name, "--network", "none", "--read-only",
               "--read-only-tmpfs=false", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", *(f"--env={e}" for e in env), image.tag,
               "--mysql.address=127.0.0.1:3306", "--mysql.user=exporter",
               "--web.listen-address=127.0.0.1:9864")
    attached = False
    try:
        pid = podman.host_pid(name)
        attach_netns(netns, pid)
        attached = True
        client = NamespaceClient(netns)
        deadline = started + 30
        while True:
            try:
                client.get("/metrics", 9864, timeout=2)
                break
            except OSError:
                if not os.path.exists(f"/proc/{pid}") or time.monotonic() > deadline:
                    pytest.fail(f"no /metrics answer:\n{podman.logs(name)}")
                time.sleep(0.02)
        yield name, pid, client, time.monotonic() - started
    finally:
        if attached:
            detach_netns(netns)
        podman.run("rm", "--force", name, check=False)


def test_the_image_runs_read_only_and_answers_metrics(podman: Podman, image: BuiltImage) -> None:
    with running(podman, image) as (name, pid, client, startup):
        status, body = client.get("/metrics", 9864)
        assert status == 200
        assert 'mysql_idle_up{target="127.0.0.1:3306"} 0.0' in body  # nothing listens there
        with open(f"/proc/{pid}/status", encoding="utf-8") as status_file:
            lines = dict(line.split(":", 1) for line in status_file)
        assert lines["Uid"].split() == ["65532"] * 4
        assert lines["Gid"].split() == ["65532"] * 4
        assert int(lines["CapEff"], 16) == 0
        write = podman.run("exec", name, "sh", "-c", "touch /tmp/x || touch /opt/venv/x",
                           check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        assert startup < MAX_STARTUP_SECONDS
        print(f"\nstart-up to the first /metrics answer: {startup:.2f} s")


def test_every_module_the_exporter_loads_comes_from_optimized_bytecode(
    podman: Podman, image: BuiltImage
) -> None:
    """The image runs Python at PYTHONOPTIMIZE=2 (no docstrings held: about 1.5 MiB of a
    sidecar's resident memory), and every module an exporter loads, up to a scrape of each
    page, comes from bytecode made for that level: python:3.11-slim deletes its standard
    library's bytecode, and the container can write none, so a module without it would be
    compiled from source at every start (2.2 MiB and 0.4 s of CPU for the standard
    library). PYTHONVERBOSE=1 makes the interpreter say where
    each module's code comes from."""
    with running(podman, image, env=["PYTHONVERBOSE=1"]) as (name, _, client, _startup):
        for path in ("/metrics", "/", "/status.json", "/healthz"):
            status, _body = client.get(path, 9864)
            assert status == 200, path
        log = podman.logs(name)
    loaded = re.findall(r"^# code object from (.+)$", log, flags=re.MULTILINE)
    assert len(loaded) > 100, log[-2000:]  # the verbose output is there
    from_source = [where for where in loaded if not where.startswith("'")]
    assert from_source == [], f"{len(from_source)} modules compiled from source: {from_source[:8]}"
    not_level_2 = [where for where in loaded if not where.endswith(".opt-2.pyc'")]
    assert not_level_2 == [], not_level_2[:8]
    # The exporter's own modules among them, the lazily imported status page included.
    assert any("/exporter/web/__pycache__/status_page." in where for where in loaded)


def test_the_images_help_is_the_sources_without_docstrings(
    podman: Podman, image: BuiltImage
) -> None:
    """PYTHONOPTIMIZE=2 drops docstrings: --help must not be made of them."""
    env = {**os.environ, "COLUMNS": "100"}
    here = subprocess.run([sys.executable, "-m", "exporter", "--help"], capture_output=True,
                          text=True, check=True, cwd=REPO, env=env, timeout=30).stdout
    there = podman.run("run", "--rm", "--network", "none", "--env", "COLUMNS=100", image.tag,
                       "--help").stdout
    assert there == here
