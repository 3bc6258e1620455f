"""Encoders, registered by name in :mod:`auden_kit.hub` (Zipformer first)."""
