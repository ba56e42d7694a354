"""The original Modomo scraper's entry point: ``uvicorn main_refactored:app`` serves the API.

The app lives in :mod:`modomo.api`; ``modomo api`` is the documented way to start it.
"""

from modomo.api import app

__all__ = ["app"]
