"""The module :mod:`modomo.models.device` itself (see the package docstring)."""

import sys

from modomo.models import device as _module

sys.modules[__name__] = _module
