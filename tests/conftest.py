"""Shared fixtures: one small synthetic corpus per test session (seconds to build)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """LibriSpeech-layout corpus: 4 speakers, 8/2/2 utterances each."""
    from auden_kit.data.corpora.synthetic import SynthOptions, synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    return synthesize_corpus(out, SynthOptions(num_speakers=4, train_utts=8, dev_utts=2, test_utts=2,
                                               utts_per_chapter=4, jobs=2), progress=False)


@pytest.fixture(scope="session")
def synth_cuts(synth_corpus, tmp_path_factory) -> dict:
    """{part: cut manifest path} of :func:`synth_corpus` (audio only, no features)."""
    from auden_kit.data.corpora.synthetic import corpus_to_cuts

    return corpus_to_cuts(synth_corpus, tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="session")
def fbank_cuts(synth_cuts, tmp_path_factory) -> dict:
    """{part: cut manifest with lilcom fbank}."""
    from lhotse import CutSet

    from auden_kit.data.features import compute_fbank
    from auden_kit.io import save_cuts_atomic

    out = tmp_path_factory.mktemp("fbank")
    paths = {}
    for part, p in synth_cuts.items():
        cuts = compute_fbank(CutSet.from_file(p), out, part, num_jobs=1)
        paths[part] = out / f"cuts_{part}.jsonl.gz"
        save_cuts_atomic(cuts, paths[part])
    return paths
