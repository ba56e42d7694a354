"""The module :mod:`modomo.models.depth` itself (see the package docstring)."""

import sys

from modomo.models import depth as _module

sys.modules[__name__] = _module
