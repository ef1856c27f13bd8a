"""Compatibility module: run records are written by :mod:`kit.runtime.records` and read by
:mod:`kit.offline.runs` now (docs/architecture.md: layers). The old names keep working."""

from kit.offline.runs import RecordFormatError, problems_frame, read_events, samples_frame
from kit.runtime.records import RECORD_VERSION, RunRecorder

__all__ = ["RECORD_VERSION", "RecordFormatError", "RunRecorder", "problems_frame", "read_events", "samples_frame"]
