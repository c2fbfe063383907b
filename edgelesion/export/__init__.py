"""Export side: QAT, TFLite and ONNX conversion, parity checks, alert thresholds, the bundle for phones.

Imports the training, data and inference sides and the shared leaves.
"""

from edgelesion.export.exporting import ExportOptions, export_run

__all__ = ["ExportOptions", "export_run"]
