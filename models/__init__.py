"""Compatibility: the original Modomo scraper's top-level ``models`` package, importable from
the repository root. Each ``models.<module>`` is the module :mod:`modomo.models.<module>`
itself (``models.registry``, ``models.detectors``, ``models.segmenter``, ``models.depth``,
``models.clip``, ``models.weights``, ``models.device``); the package re-exports
:mod:`modomo.models`' own names.
"""

from modomo.models import ROLES, MissingWeightsError, Weights, pull, resolve

__all__ = ["ROLES", "MissingWeightsError", "Weights", "pull", "resolve"]
