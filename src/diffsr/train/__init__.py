"""Training: the trainer, checkpoints, EMA, logging and the pre-flight loss audits."""
