"""The seed's "deep neural network": a multilayer perceptron over flattened inputs."""
from typing import Optional

import flax.linen as nn

from zoo.models.contract import setting
from zoo.models.registry import register
from zoo.models.dropout import ExampleDropout


@register('mlp')
class MLP(nn.Module):
  """Dense-ReLU layers of `hidden_sizes`, dropout between them, then a linear classifier."""
  num_classes: int = 10
  input_kind = 'image'  # flattened: any size and channel count
  hidden_sizes: tuple[int, ...] = setting((512, 256), 'Widths of the hidden Dense-ReLU layers.')
  dropout_rate: float = setting(0.2, 'Dropout after each hidden layer.')
  # The mapped axis a batch is sharded over, if any: dropout masks follow the global example index
  # (`dropout.py`), so the same batch trains alike on any number of devices.
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = inputs.reshape((inputs.shape[0], -1))
    for size in self.hidden_sizes:
      x = nn.relu(nn.Dense(size)(x))
      x = ExampleDropout(self.dropout_rate, deterministic=not train, axis_name=self.axis_name)(x)
    return nn.Dense(self.num_classes)(x)
