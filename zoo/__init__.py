"""The JAX model zoo: pure Flax Linen models and the machinery that trains them data-parallel."""
