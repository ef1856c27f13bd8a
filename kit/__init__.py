"""aimo-kit: the shared library for AIMO Progress Prize submissions, training and evaluation."""

__version__ = "0.1.0"
