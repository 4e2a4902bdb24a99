"""The model registry: the names `--model` accepts, each a pure Linen module class.

Every entry takes its output size as `num_classes` (plus whatever the dataset dictates, such as
`vocab_size` for text) and follows one calling convention: `apply(variables, inputs, train=...)`.
"""
from zoo.models.airbench import AirbenchNet
from zoo.models.cnn import ResNet, SimpleCNN
from zoo.models.lstm import BiLSTMClassifier, LSTMClassifier
from zoo.errors import ZooError
from zoo.models.mlp import MLP

MODELS = {
    'simple_cnn': SimpleCNN,
    'resnet20': ResNet,
    'airbench': AirbenchNet,
    'mlp': MLP,
    'lstm': LSTMClassifier,
    'bilstm': BiLSTMClassifier,
}


def create_model(name: str, **dataset_kwargs):
  """Builds registry entry `name`; unknown names raise ZooError (a ValueError) listing the known ones."""
  if name not in MODELS:
    raise ZooError(f'unknown model {name!r}; choose one of: {", ".join(sorted(MODELS))}')
  return MODELS[name](**dataset_kwargs)
