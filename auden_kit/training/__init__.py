"""Training: the task-agnostic trainer, optimizers and schedules, checkpoints and averaging."""
