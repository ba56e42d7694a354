"""Compatibility shim: ``celery -A celery_app worker`` from the repository root, as in the
original Modomo scraper. The application lives in :mod:`modomo.celery_app`."""

from modomo.celery_app import app

celery = app

__all__ = ["app", "celery"]
