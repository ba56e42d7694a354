"""The module :mod:`modomo.models.detectors` itself (see the package docstring)."""

import sys

from modomo.models import detectors as _module

sys.modules[__name__] = _module
