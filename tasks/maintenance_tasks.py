"""The module :mod:`modomo.tasks.maintenance_tasks` itself (see the package docstring)."""

import sys

from modomo.tasks import maintenance_tasks as _module

sys.modules[__name__] = _module
