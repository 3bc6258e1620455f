"""Metrics: WER/CER with aligned error listings."""
