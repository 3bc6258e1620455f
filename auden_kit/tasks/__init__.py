"""Task plugins. A task says how to build its model from config, turn a batch into a loss
and metrics, and decode/evaluate. The trainer, data module and CLI know nothing else."""
