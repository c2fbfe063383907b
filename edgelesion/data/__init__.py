"""Data side: read a folder of class subfolders, audit it, split it without leaks, rebalance the training split.

Imports only the shared leaves (edgelesion.images, .preprocessing, .metrics, .errors, .fileio, .plots, .provenance).
"""

from edgelesion._lazy import lazy_entry_points

__getattr__, __all__ = lazy_entry_points(
    __name__,
    {
        "run_audit": "edgelesion.data.audit_report",
        "MetadataSpec": "edgelesion.data.metadata",
        "load_dataset": "edgelesion.data.dataset",
        "audit_dataset": "edgelesion.data.audit",
    },
)
