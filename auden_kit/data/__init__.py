"""Lhotse glue: audio loading, features, the data module, validation and statistics."""
