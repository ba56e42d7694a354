"""The module :mod:`modomo.tasks.color_tasks` itself (see the package docstring)."""

import sys

from modomo.tasks import color_tasks as _module

sys.modules[__name__] = _module
