"""Export side: QAT, TFLite and ONNX conversion, parity checks, alert thresholds, the bundle for phones.

Imports the training, data and inference sides and the shared leaves.
"""

from edgelesion._lazy import lazy_entry_points

__getattr__, __all__ = lazy_entry_points(
    __name__,
    {
        "export_run": "edgelesion.export.exporting",
        "ExportOptions": "edgelesion.export.options",
        "calibrate_bundle": "edgelesion.export.site_calibration",
    },
)
