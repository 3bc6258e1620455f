"""Heads that sit on an encoder: transducer decoder + joiner, CTC, classifiers."""
