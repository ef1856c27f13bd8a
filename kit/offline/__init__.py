"""The offline layer: one run data model and reader, metrics, selection, reports (docs/architecture.md)."""
