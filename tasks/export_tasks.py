"""The module :mod:`modomo.tasks.export_tasks` itself (see the package docstring)."""

import sys

from modomo.tasks import export_tasks as _module

sys.modules[__name__] = _module
