"""The runtime layer: everything the submission notebook embeds (docs/architecture.md)."""
