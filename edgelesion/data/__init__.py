"""Data side: read a folder of class subfolders, audit it, split it without leaks, rebalance the training split.

Imports only the shared leaves (edgelesion.images, .preprocessing, .metrics, .errors, .fileio, .plots, .provenance).
"""
