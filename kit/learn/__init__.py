"""The learning layer: curation, rewards, scorer, difficulty predictor (docs/architecture.md)."""
