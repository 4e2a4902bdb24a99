"""The model registry: the names `--model` accepts, each a pure Linen module class registered by
its own module (`registry.register`).

Every entry takes its output size as `num_classes` (plus whatever the dataset dictates, such as
`vocab_size` for text) and follows one calling convention: `apply(variables, inputs, train=...)`.
"""
import importlib
import pkgutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.errors import ZooError
from zoo.models import contract
from zoo.models.registry import MODELS, register

# Every module of this package is imported, and each registers its models itself (`@register`):
# adding a model is its own file, touching no list here.
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
  importlib.import_module(f'{__name__}.{_module.name}')


def contract_of(name_or_model) -> contract.Contract:
  """What the zoo may ask of a registered model (by name, class or instance)."""
  return contract.contract_of(MODELS[name_or_model] if isinstance(name_or_model, str) else name_or_model)


def _known(name: str):
  if name not in MODELS:
    raise ZooError(f'unknown model {name!r}; choose one of: {", ".join(sorted(MODELS))}')
  return MODELS[name]


def resolve_settings(name: str, given: dict, roles=contract.ROLES) -> dict:
  """Every setting of model `name`: `given` (checked) over the defaults."""
  return contract.check_settings(name, _known(name), given, roles)


def check_input(name: str, kind: str, image_shape=None) -> None:
  """Raises ZooError when model `name` cannot take the dataset's inputs (images or token ids, and
  for images their size). An unknown name passes: `create_model` names the known ones."""
  if name not in MODELS:
    return
  model = contract_of(name)
  if model.input_kind != kind:
    fitting = sorted(n for n in MODELS if contract_of(n).input_kind == kind)
    raise ZooError(f'--model={name} takes {"token ids (text)" if model.input_kind == "text" else "images"}, '
                   f'not {kind}s; for this dataset choose one of: {", ".join(fitting)}')
  smallest = model.min_image_size
  if image_shape is not None and min(image_shape[:2]) < smallest:
    raise ZooError(f'--model={name} needs images of at least {smallest}x{smallest} pixels, not '
                   f'{image_shape[1]}x{image_shape[0]}; pass --image_size={smallest} or more, or another model')


def create_model(name: str, settings: dict | None = None, **dataset_kwargs):
  """Builds registry entry `name` with its `settings` (any left out keep their defaults) and the
  dataset's dimensions; an unknown name or setting raises ZooError naming the known ones."""
  resolved = resolve_settings(name, settings or {})
  return MODELS[name](**resolved, **dataset_kwargs)


def probabilities(logits) -> np.ndarray:
  """Class probabilities from a model's logits, float32 [N, classes]: one logit means two classes
  (sigmoid: [p(class 0), p(class 1)]), several a softmax."""
  logits = np.asarray(logits, np.float32)
  if logits.shape[-1] == 1:
    positive = np.asarray(jax.nn.sigmoid(logits[:, 0]))
    return np.stack([1 - positive, positive], axis=-1)
  return np.asarray(jax.nn.softmax(logits, axis=-1))


def probabilities_jnp(logits):
  """`probabilities` in jax.numpy, traceable: the same computation inside an exported model's graph
  (`zoo.export`), so that the exported model gives what `predict` gives."""
  logits = logits.astype(jnp.float32)
  if logits.shape[-1] == 1:
    positive = jax.nn.sigmoid(logits[:, 0])
    return jnp.stack([1 - positive, positive], axis=-1)
  return jax.nn.softmax(logits, axis=-1)


def batchnorm_scopes(model: nn.Module, sample_inputs) -> frozenset[str]:
  """The 'a/b' parameter paths of every `nn.BatchNorm` inside `model`, found by what each module
  is (traced once, abstractly), not by what it is called: a BatchNorm given its own name counts."""
  found = set()

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm):
      found.add('/'.join(context.module.path))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), sample_inputs)
  return frozenset(found)


def head_scope(model: nn.Module, sample_inputs) -> str:
  """The 'a/b' path of the classifier head: the last `nn.Dense` the model calls whose width is the
  logits' (traced once, abstractly). Fine-tuning creates it anew for other classes and
  `--freeze=backbone` trains it alone."""
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, nn.Dense) and context.method_name == '__call__':
      calls.append(('/'.join(context.module.path), out.shape[-1]))
    return out

  with nn.intercept_methods(record):
    logits = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False)[0], sample_inputs)
  heads = [path for path, width in calls if width == logits.shape[-1]]
  if not heads:
    raise ZooError(f'{type(model).__name__} has no dense layer giving its logits, so it has no head to '
                   'fine-tune alone; use --freeze=none')
  return heads[-1]
