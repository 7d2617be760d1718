"""The results folder: the only way the report and the GUI read and write results."""

from .store import JOURNAL, MASKS, SUMMARY, ResultStore, atomic_write_bytes, atomic_write_json

__all__ = ["JOURNAL", "MASKS", "SUMMARY", "ResultStore", "atomic_write_bytes", "atomic_write_json"]
