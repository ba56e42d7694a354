"""The module :mod:`modomo.models.clip` itself (see the package docstring)."""

import sys

from modomo.models import clip as _module

sys.modules[__name__] = _module
