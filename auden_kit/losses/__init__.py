"""Losses: pruned RNN-T (pure PyTorch), CTC, label-smoothed cross-entropy."""
