"""cmaudio: consistency models for audio."""

__version__ = "0.1.0"
