"""The module :mod:`modomo.tasks.base` itself (see the package docstring)."""

import sys

from modomo.tasks import base as _module

sys.modules[__name__] = _module
