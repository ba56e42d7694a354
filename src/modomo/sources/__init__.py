"""Where scenes come from: local files and folders, URL lists (Houzz and HF come later)."""

from modomo.sources.ingest import IngestReport, ingest
from modomo.sources.inputs import IMAGE_SUFFIXES, Input, expand_sources

__all__ = ["IMAGE_SUFFIXES", "IngestReport", "Input", "expand_sources", "ingest"]
