"""The HTTP API (FastAPI): job submission and control, scenes and objects, monitoring, the
dashboard page. ``uvicorn modomo.api:app`` or ``modomo api`` serves it.

``app`` is built on first access, so ``modomo.api.keys`` (used by the CLI) stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from modomo.api.application import app

        return app
    raise AttributeError(name)
