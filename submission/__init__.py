"""Build the self-contained offline Kaggle submission: notebook, wheel and model datasets, upload, rehearsal.

``python -m submission build|wheels|model|upload|rehearse --help``. The notebook embeds the kit's source
(a base64 tar.gz), so it runs on Kaggle (internet off) from the competition data, a wheels dataset and a
model dataset only; ``rehearse`` runs it headless here from a folder without the repository.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class SubmissionError(ValueError):
    """A submission build/validation problem; the message names the file and the field."""
