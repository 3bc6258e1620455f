"""A training run must learn, not just run: the WER of a tiny model goes down.

The tiny CTC model (its transducer would need more updates than CI can afford to leave the
blank-only phase) is trained on the test corpus's 32 training utterances and validated on the
same utterances after every epoch: this checks that the loss, gradients, optimizer, schedule and
decoding fit together so the model learns what it is shown. Generalization to unseen sentences
is what the quick start measures (egs/mini_synth/RESULTS.md: 1.55 % WER on held-out sentences).
"""

from conftest import tiny_train_config


def test_tiny_model_learns_its_training_data(fbank_cuts, bpe_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from auden_kit.training.trainer import Trainer

    cfg = tiny_train_config(tmp_path / "exp", fbank_cuts, bpe_dir, num_epochs=30, max_steps=600,
                            log_interval=50, schedule_speedup=50)
    cfg.model["use_transducer"] = False
    cfg.data.valid_cuts = cfg.data.train_cuts
    cfg.data.spec_augment = False
    cfg.data.max_duration = 4
    cfg.optim.base_lr = 0.05
    cfg.optim.lr_batches = 5000
    Trainer(cfg).train()
    ea = EventAccumulator(str(tmp_path / "exp" / "tensorboard"))
    ea.Reload()
    wer = [e.value for e in ea.Scalars("valid/wer")]
    loss = [e.value for e in ea.Scalars("valid/loss")]
    print("valid WER per epoch:", [round(w, 1) for w in wer])
    print("valid loss per epoch:", [round(v, 3) for v in loss])
    assert len(wer) >= 20
    assert wer[0] >= 95  # untrained: (almost) nothing right
    assert wer[-1] <= 70 and min(wer[-3:]) < min(wer[:5]) - 25
    assert loss[-1] < 0.6 * loss[0]
