"""The module :mod:`modomo.tasks.child` itself (see the package docstring)."""

import sys

from modomo.tasks import child as _module

sys.modules[__name__] = _module
