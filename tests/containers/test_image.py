"""The image, built from the Dockerfile by a real engine and run: its user, its size, a
read-only root file system, and its start-up time to the first /metrics answer.

Costs (this machine): the base image once per machine (debootstrap, about 50 s; cached in
~/.cache/mysql-idle-exporter/images/), then per run its import (about 5 s) and the build
(about 15 s, PyPI included); the run test about 2 s.
"""

from __future__ import annotations

import os
import secrets
import time

import pytest

from tests.support.containers import (
    ENGINE_PACKAGES,
    BaseImage,
    BuiltImage,
    Podman,
    engine_failure,
    missing_packages,
    require_engine,
)
from tests.support.pods import NamespaceClient, attach_netns, detach_netns

# Bounds that catch a regression without flaking on a busy machine. The image is the base
# (183 MB here; python:3.11-slim is about 130 MB) plus the exporter's venv (about 22 MB).
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


def test_the_image_runs_read_only_and_answers_metrics(podman: Podman, image: BuiltImage) -> None:
    """No writable path at all (not even /tmp), no network but loopback; start-up is from
    `podman run` to the first /metrics answer."""
    name = f"mie-image-{secrets.token_hex(3)}"
    netns = f"{name}-net"
    started = time.monotonic()
    podman.run("run", "--detach", "--name", name, "--network", "none", "--read-only",
               "--read-only-tmpfs=false", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", image.tag,
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
                status, body = client.get("/metrics", 9864, timeout=2)
                break
            except OSError:
                if not os.path.exists(f"/proc/{pid}") or time.monotonic() > deadline:
                    pytest.fail(f"no /metrics answer:\n{podman.logs(name)}")
                time.sleep(0.02)
        startup = time.monotonic() - started
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
    finally:
        if attached:
            detach_netns(netns)
        podman.run("rm", "--force", name, check=False)
