"""Metrics: WER/CER with aligned error listings (wer), speaker verification (verification),
classification reports (classification)."""
