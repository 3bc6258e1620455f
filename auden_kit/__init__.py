"""auden-kit: a modular speech toolkit (Lhotse data, Zipformer encoders, staged recipes)."""

__version__ = "0.1.0"
