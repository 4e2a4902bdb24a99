"""The JAX model zoo: pure Flax Linen models and the machinery that trains them data-parallel.

`zoo.load(workdir)` gives back a trained model, ready to `predict` on images or texts; `workdir` may
also be a shipped model's name (`zoo.list_trained()`), a `.zoo` file or its URL.
"""
from zoo.inference import TrainedModel, load
from zoo.packed import list_trained

__all__ = ['TrainedModel', 'list_trained', 'load']
