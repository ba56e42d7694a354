"""Dataset export: COCO instance segmentation, YOLO detection / segmentation, and Hugging
Face ``datasets``, streamed from the database, with deterministic stratified splits, a
``manifest.json`` and a dataset card."""

from modomo.export.records import SPLITS, ExportObject, ExportScene
from modomo.export.runner import FORMATS, ExportOptions, run_export

__all__ = ["FORMATS", "SPLITS", "ExportObject", "ExportOptions", "ExportScene", "run_export"]
