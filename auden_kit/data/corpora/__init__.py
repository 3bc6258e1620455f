"""Corpus preparation that Lhotse does not provide, one module per corpus."""
