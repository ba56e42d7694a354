"""The module :mod:`modomo.tasks.import_tasks` itself (see the package docstring)."""

import sys

from modomo.tasks import import_tasks as _module

sys.modules[__name__] = _module
