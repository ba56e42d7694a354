"""AI models: device selection, weights, the per-process registry and the model wrappers.

Free of Celery and the database. Importing this package does not import torch; the models
(and torch) load on first use, in the process that uses them.
"""

from modomo.models.weights import ROLES, MissingWeightsError, Weights, pull, resolve

__all__ = ["ROLES", "MissingWeightsError", "Weights", "pull", "resolve"]
