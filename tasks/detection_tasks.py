"""The module :mod:`modomo.tasks.detection_tasks` itself (see the package docstring)."""

import sys

from modomo.tasks import detection_tasks as _module

sys.modules[__name__] = _module
