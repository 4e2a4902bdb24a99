"""Training: the recorded config, optax optimizers, the sharded steps and the one training loop."""
