"""Fixtures for the Helm chart tests (helpers in tests/support/helm.py)."""

from __future__ import annotations

import pytest

from tests.support.helm import Helm, find_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return find_helm(tmp_path_factory)
