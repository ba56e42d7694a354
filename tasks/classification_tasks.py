"""The module :mod:`modomo.tasks.classification_tasks` itself (see the package docstring)."""

import sys

from modomo.tasks import classification_tasks as _module

sys.modules[__name__] = _module
