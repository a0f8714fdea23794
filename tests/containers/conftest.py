"""The container engine, the base image and the project's image: one of each per test run
(tests/support/containers.py says how they are made and what they cost)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.containers import BaseImage, BuiltImage, Podman, build_image, engine
from tests.support.containers import ensure_base_image as _ensure_base_image


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    with engine(tmp_path_factory.mktemp("podman")) as checked:
        yield checked


@pytest.fixture(scope="session")
def base_image(podman: Podman) -> BaseImage:
    return _ensure_base_image(podman)


@pytest.fixture(scope="session")
def image(podman: Podman, base_image: BaseImage) -> BuiltImage:
    return build_image(podman, base_image)
