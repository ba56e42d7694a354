"""Where scenes come from: local files and folders, URL lists, Houzz galleries, Hugging Face
datasets."""

from modomo.sources.ingest import IngestReport, existing_keys, ingest
from modomo.sources.inputs import IMAGE_SUFFIXES, Input, expand_sources

__all__ = [
    "IMAGE_SUFFIXES",
    "IngestReport",
    "Input",
    "existing_keys",
    "expand_sources",
    "ingest",
]
