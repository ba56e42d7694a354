"""The module :mod:`modomo.models.segmenter` itself (see the package docstring)."""

import sys

from modomo.models import segmenter as _module

sys.modules[__name__] = _module
