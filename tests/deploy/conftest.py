"""Fixtures for tests/deploy: the kustomize command and every overlay rendered once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy._kustomize import KUBERNETES, OVERLAYS, Render, kustomize_or_skip, render_with


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    """The command that renders a kustomization directory (kubectl kustomize, or kustomize)."""
    return kustomize_or_skip()


@pytest.fixture(scope="session")
def render(kustomize: list[str]) -> Render:
    """Render a kustomization directory."""
    return lambda directory: render_with(kustomize, directory)


@pytest.fixture(scope="session")
def rendered(render: Render) -> dict[str, list[dict[str, Any]]]:
    """Every overlay, rendered once."""
    return {name: render(KUBERNETES / "overlays" / name) for name in OVERLAYS}
