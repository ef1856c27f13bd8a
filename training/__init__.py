"""Training-side tools (data curation; see docs/curation.md)."""
