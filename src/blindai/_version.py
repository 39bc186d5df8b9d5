"""The version of BlindAI, stated once (pyproject.toml reads it from here)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "1.0.0a1"
