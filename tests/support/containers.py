"""A container engine for tests: podman with its own storage and configuration, a Debian
base image that stands in for python:3.11-slim, and the project's image built from the
Dockerfile.

    podman = Podman(workdir)                 # private config and storage under workdir
    base = ensure_base_image(podman)         # debootstrap once, cached in ~/.cache
    image = build_image(podman, base)        # the Dockerfile, BASE_IMAGE=base
    ...
    podman.close()                           # removes every pod, container and image

Only registries' packages are reachable here, never an image registry, so the base is made
with `debootstrap --variant=minbase bookworm` (about 50 s) and kept as a tarball in
`~/.cache/mysql-idle-exporter/images/` (`$XDG_CACHE_HOME` if set) for later runs, shared by
every checkout on the machine; `podman import` of it takes about 5 s. The
build reaches PyPI through the host's network (`--network host`); where an intercepting
proxy signs HTTPS, the host's CA bundle is mounted into the build's RUN steps with a
pip.conf that points pip at it. Neither ever lands in the image or the repository.

podman, not docker.io's daemon: the same engine builds the image and plays the chart's
rendered Deployment as a pod (`podman kube play`), and needs no daemon. Its configuration
(cgroupfs, file events, runc: crun refuses the hybrid cgroup hierarchy of these machines)
and storage live in the test's own directory, so nothing of the machine's is used or kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.exporter_process import Worker

REPO = Path(__file__).resolve().parents[2]
# Shared by every checkout on the machine, like the MySQL prefix (scripts/fetch-mysql.sh): a
# fresh clone, CI's included, then pays the import and not the 50 s debootstrap.
IMAGES_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
    / "mysql-idle-exporter" / "images"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_MIRROR = os.environ.get("MYSQL_IDLE_EXPORTER_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# What python:3.11-slim offers the Dockerfile: `python` with venv and pip, and CA certificates.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# Left out of the base: package lists, downloaded .debs and documentation (about 110 MB).
BASE_PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man")
BASE_TAG = f"localhost/mie-base:{BASE_SUITE}"
IMAGE_TAG = "localhost/mysql-idle-exporter:test"

# Debian package -> the command that shows it is installed (scripts/setup installs them).
ENGINE_PACKAGES = {
    "podman": "podman",
    "runc": "runc",
    "catatonit": "catatonit",  # the pods' infra process
    "debootstrap": "debootstrap",  # the base image
}
INSTALL_HINT = (
    "run scripts/setup, or: apt-get install --no-install-recommends "
    + " ".join(ENGINE_PACKAGES)
)


class EngineError(RuntimeError):
    """A podman, debootstrap or build command failed."""


def _find(command: str) -> str | None:
    return shutil.which(command) or next(
        (str(p) for d in ("/usr/sbin", "/sbin", "/usr/bin") if (p := Path(d) / command).exists()),
        None,
    )


def missing_packages(find: Callable[[str], str | None] = _find) -> list[str]:
    """The Debian packages of the container engine whose command is not installed."""
    return [package for package, command in ENGINE_PACKAGES.items() if find(command) is None]


def engine_failure(missing: Sequence[str], detail: str = "") -> str:
    """The one message a container test fails with when no engine can run here."""
    what = f"missing {', '.join(missing)}" if missing else detail
    return (
        f"the container tests need podman (with runc and catatonit) and debootstrap: {what}. "
        f"They are never skipped: {INSTALL_HINT}. They also need root (storage, pods, "
        "network namespaces) and the Debian mirror and PyPI for the base image and the build."
    )


def require_engine(find: Callable[[str], str | None] = _find) -> None:
    """pytest.fail, saying what is missing, unless the engine's commands are installed."""
    missing = missing_packages(find)
    if missing:
        pytest.fail(engine_failure(missing), pytrace=False)
    if os.geteuid() != 0:
        pytest.fail(engine_failure([], "not running as root"), pytrace=False)


def _run(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
         check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                env=env, input=input_text)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EngineError(f"{' '.join(argv[:4])} ...: {error}") from error
    if check and result.returncode != 0:
        raise EngineError(
            f"{' '.join(argv[:6])} ... failed ({result.returncode}):\n"
            f"{(result.stderr or result.stdout)[-3000:]}"
        )
    return result


class Podman:
    """podman with a private containers.conf and storage under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        for name in ("root", "run", "tmp", "net"):
            (workdir / name).mkdir(parents=True, exist_ok=True)
        conf = workdir / "containers.conf"
        # cgroupfs and file events: no systemd here. runc: crun refuses the machine's hybrid
        # cgroup hierarchy. ulimits within the machine's hard limits (nofile 20000, nproc
        # 96369): a container without CAP_SYS_RESOURCE cannot raise its own.
        conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{workdir}/events.log"\n'
            'runtime = "runc"\n'
            f'tmp_dir = "{workdir}/tmp"\n'
            "[network]\n"
            f'network_config_dir = "{workdir}/net"\n'
        )
        storage = workdir / "storage.conf"
        storage.write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{workdir}/root"\n'
            f'runroot = "{workdir}/run"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_STORAGE_CONF": str(storage),
            "TMPDIR": str(workdir / "tmp"),
        }

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run(["podman", *args], timeout=timeout, env=self.env, check=check,
                    input_text=input_text)

    def start_check(self) -> None:
        """pytest.fail unless podman runs here with this configuration."""
        try:
            info = json.loads(self.run("info", "--format", "json", timeout=60).stdout)
        except (EngineError, ValueError) as error:
            pytest.fail(engine_failure([], f"podman cannot start: {error}"), pytrace=False)
        runtime = info["host"]["ociRuntime"]["name"]
        if runtime != "runc":
            pytest.fail(engine_failure([], f"podman uses {runtime}, not runc"), pytrace=False)

    def image_size(self, tag: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", tag).stdout)

    def image_config(self, tag: str) -> dict[str, object]:
        config = json.loads(self.run("image", "inspect", tag).stdout)[0]["Config"]
        assert isinstance(config, dict)
        return config

    def host_pid(self, container: str) -> int:
        return int(self.run("inspect", "--format", "{{.State.Pid}}", container).stdout)

    def logs(self, container: str) -> str:
        result = self.run("logs", container, check=False)
        return result.stdout + result.stderr

    def close(self) -> None:
        """Remove every pod, container and image of this storage, then the storage."""
        for args in (("pod", "rm", "--all", "--force", "--time", "0"),
                     ("rm", "--all", "--force", "--time", "0"),
                     ("rmi", "--all", "--force"), ("secret", "rm", "--all")):
            self.run(*args, check=False, timeout=120)
        # Overlay mounts left behind by a killed podman would keep the directory busy.
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            ours = [line.split()[1] for line in mounts if str(self.workdir) in line]
        for mountpoint in sorted(ours, key=len, reverse=True):
            _run(["umount", "-l", mountpoint], timeout=30, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class BaseImage:
    tag: str
    tarball: Path
    debootstrap_seconds: float | None  # None: taken from the cache
    import_seconds: float


def base_tarball_path() -> Path:
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_PRUNE, DEBIAN_MIRROR]).encode()
    digest = hashlib.sha256(recipe).hexdigest()[:12]
    return IMAGES_DIR / f"debian-{BASE_SUITE}-python-{digest}.tar"


def _debootstrap(tarball: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="mie-debootstrap-", dir=IMAGES_DIR))
    root = scratch / "root"
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              BASE_SUITE, str(root), DEBIAN_MIRROR], timeout=900)
        for relative in BASE_PRUNE:
            target = root / relative
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir()
        partial = scratch / "base.tar"
        _run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], timeout=300)
        partial.rename(tarball)  # whole or not at all, even if this run is killed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ensure_base_image(podman: Podman) -> BaseImage:
    """The base image in podman's storage, from the cached tarball (made first if needed;
    one run at a time makes it, the others wait for it)."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    tarball = base_tarball_path()
    made: float | None = None
    with open(IMAGES_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            started = time.monotonic()
            try:
                _debootstrap(tarball)
            except EngineError as error:
                pytest.fail(
                    f"cannot make the base image with debootstrap from {DEBIAN_MIRROR} "
                    f"(set MYSQL_IDLE_EXPORTER_DEBIAN_MIRROR for another mirror): {error}",
                    pytrace=False,
                )
            made = time.monotonic() - started
    started = time.monotonic()
    podman.run("import", str(tarball), BASE_TAG, timeout=300)
    return BaseImage(BASE_TAG, tarball, made, time.monotonic() - started)


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    seconds: float
    size_bytes: int


def build_image(podman: Podman, base: BaseImage, tag: str = IMAGE_TAG) -> BuiltImage:
    """The repository's Dockerfile built on `base`; pytest.fail with the build's output if
    it does not build."""
    mounts: list[str] = []
    if HOST_CA_BUNDLE.is_file():
        # pip in the build must trust what the host trusts (an intercepting proxy's CA).
        pip_conf = podman.workdir / "pip.conf"
        pip_conf.write_text(f"[global]\ncert = {HOST_CA_BUNDLE}\n")
        mounts = ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
                  "--volume", f"{pip_conf}:/etc/pip.conf:ro"]
    started = time.monotonic()
    try:
        podman.run("build", "--network", "host", "--build-arg", f"BASE_IMAGE={base.tag}",
                   *mounts, "--tag", tag, str(REPO), timeout=600)
    except EngineError as error:
        pytest.fail(f"the Dockerfile does not build on {base.tag}: {error}", pytrace=False)
    seconds = time.monotonic() - started
    return BuiltImage(tag, seconds, podman.image_size(tag))


@contextlib.contextmanager
def engine(workdir: Path) -> Iterator[Podman]:
    """A checked podman for one test session; everything it made is removed after."""
    require_engine()
    podman = Podman(workdir)
    try:
        podman.start_check()
        yield podman
    finally:
        podman.close()



# --- containers that run the host's own programs --------------------------------------


def host_rootfs(directory: Path) -> Path:
    """An empty root for `podman run --rootfs`: the host's /usr (and the merged-/usr links)
    is mounted into it, so a container runs the host's Python without any image."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        if not os.path.lexists(directory / name):
            os.symlink(f"usr/{name}", directory / name)
    return directory


class ContainerWorker(Worker):
    """tests/support/worker.py in a real podman container (its own cgroup, named by the
    runtime: /libpod_parent/libpod-<id>), inside an existing network namespace
    (``netns_path``, e.g. /run/netns/NAME) and with host name ``hostname``: what a pod's
    container looks like to a node-mode exporter. The host's Python, virtualenv and this
    repository are mounted read-only; no image is needed."""

    def __init__(self, podman: Podman, rootfs: Path, netns_path: str, hostname: str,
                 name: str, host: str, port: int, user: str, password: str,
                 connections: int = 1) -> None:
        self._podman = podman
        self.container = f"mie-{hostname}-{os.urandom(3).hex()}"
        mounts = ["/usr", str(Path(sys.base_prefix).resolve()), str(REPO)]
        self._prefix = [
            "podman", "run", "--interactive", "--rm", "--name", self.container,
            "--network", f"ns:{netns_path}", "--hostname", hostname,
            "--env", "WORKER_PASSWORD", "--workdir", str(REPO),
            *(arg for mount in dict.fromkeys(mounts) for arg in
              ("--volume", f"{mount}:{mount}:ro")),
            "--rootfs", str(rootfs),
        ]
        super().__init__(name, host, port, user, password, connections)

    def _spawn(self, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[str]:
        env = {**popen_kwargs.pop("env", os.environ), **{
            k: v for k, v in self._podman.env.items() if k.startswith(("CONTAINERS_", "TMPDIR"))}}
        return subprocess.Popen([*self._prefix, *argv], env=env, **popen_kwargs)

    @property
    def container_id(self) -> str:
        return self._podman.run("inspect", "--format", "{{.Id}}", self.container).stdout.strip()

    def close(self) -> None:
        super().close()
        self._podman.run("rm", "--force", "--time", "0", self.container, check=False)
