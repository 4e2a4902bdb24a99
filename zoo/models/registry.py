"""`MODELS`, the names `--model` accepts, and `register`, how a model module adds to it."""
from zoo.models import contract

MODELS = {}


def register(name: str):
  """A class decorator: adds the class to `MODELS` as `--model=name`, after checking the model
  contract (`contract.py`): a class that breaks it fails on import, with the broken part named.
  Also callable as `register(name)(model_class)` for a model defined elsewhere."""
  def add(model_class):
    contract.check(name, model_class)
    if name in MODELS and MODELS[name] is not model_class:
      raise TypeError(f'model name {name!r} is taken by {MODELS[name].__name__}; register {model_class.__name__} '
                      'under another name')
    MODELS[name] = model_class
    return model_class
  return add
