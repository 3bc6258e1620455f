"""A training run must learn, not just run: the WER of a tiny model goes down.

The tiny CTC model (its transducer would need more updates than CI can afford to leave the
blank-only phase) is trained on the test corpus's 32 training utterances and validated on the
same utterances after every epoch: this checks that the loss, gradients, optimizer, schedule and
decoding fit together so the model learns what it is shown. Generalization to unseen sentences
is what the quick start measures (egs/mini_synth/RESULTS.md: 1.55 % WER on held-out sentences).
"""



def test_tiny_model_learns_its_training_data(learned_ctc):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp, _ = learned_ctc
    ea = EventAccumulator(str(exp / "tensorboard"))
    ea.Reload()
    wer = [e.value for e in ea.Scalars("valid/wer")]
    loss = [e.value for e in ea.Scalars("valid/loss")]
    print("valid WER per epoch:", [round(w, 1) for w in wer])
    print("valid loss per epoch:", [round(v, 3) for v in loss])
    assert len(wer) >= 20
    assert wer[0] >= 95  # untrained: (almost) nothing right
    assert wer[-1] <= 70 and min(wer[-3:]) < min(wer[:5]) - 25
    assert loss[-1] < 0.6 * loss[0]
