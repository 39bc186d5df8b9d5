"""Where no kubectl or kustomize can be found, the deploy tests skip (one reason, all tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.deploy import _kustomize


def test_no_kustomize_anywhere_skips_with_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert _kustomize._kustomize_command() is None
    with pytest.raises(pytest.skip.Exception, match=r"`make test-deploy` installs kubectl"):
        _kustomize.kustomize_or_skip()


def test_kubectl_in_this_venv_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubectl").touch()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    assert _kustomize._kustomize_command() == [str(tmp_path / "bin" / "kubectl"), "kustomize"]
