"""Modomo: a GPU-aware pipeline that turns interior photographs into ML training datasets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modomo")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
