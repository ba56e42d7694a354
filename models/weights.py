"""The module :mod:`modomo.models.weights` itself (see the package docstring)."""

import sys

from modomo.models import weights as _module

sys.modules[__name__] = _module
