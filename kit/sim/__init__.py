"""The simulation layer: virtual clock, replay engine, competition simulator (docs/architecture.md)."""
