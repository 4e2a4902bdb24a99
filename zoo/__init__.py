"""The JAX model zoo: pure Flax Linen models and the machinery that trains them data-parallel.

`zoo.load(workdir)` gives back a trained model, ready to `predict` on images or texts.
"""
from zoo.inference import TrainedModel, load

__all__ = ['TrainedModel', 'load']
