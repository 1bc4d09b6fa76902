"""avmaster: audio-visual question answering expert models (AV-Master and its ablations)."""

__version__ = "0.1.0"
