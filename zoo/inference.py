"""A trained model from its workdir alone: `zoo.load(workdir).predict(images_or_texts)`.

Everything needed is in the workdir: `config.json` (which model, which dataset, how it was built),
`dataset.json` (class names and input format), `vocabulary.txt` (text) and the orbax checkpoints.
No data directory, TFDS download, mesh or device count is needed; the checkpoint is read as host
arrays and the model runs under a plain `jax.jit` on the default device.
"""
import functools
import logging
from pathlib import Path
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np

from zoo import checkpoints, packed
from zoo.data import images
from zoo.errors import ZooError
from zoo.models import probabilities
from zoo.training import builder

log = logging.getLogger('zoo')


def read_image(source, shape: Sequence[int], formats: Sequence[str] | None = None,
               max_pixels: int | None = None) -> np.ndarray:
  """A path, binary file or PIL image -> uint8 [height, width, channels] in the training format
  (alpha over white, RGB or L, Pillow's bicubic resize: `zoo.data.images.to_array`). `formats` and
  `max_pixels` restrict what is decoded (`zoo.data.images.open_image`)."""
  return images.to_array(images.open_image(source, formats, max_pixels), shape)


class TrainedModel:
  """A restored model with what it needs to classify raw inputs.

  Attributes: `model` (the Linen module), `variables` ({'params'} plus 'batch_stats' for BatchNorm
  models: `model.apply(variables, inputs, train=False)` gives logits), `config` (the recorded
  `Config`), `step` (the checkpoint's), `class_names` and `description` (`dataset.json`).
  """

  def __init__(self, model: nn.Module, variables: dict, config, step: int, class_names: list[str],
               description: dict, dataset):
    self.model, self.variables, self.config, self.step = model, variables, config, step
    self.class_names, self.description = class_names, description
    self._dataset = dataset

  @property
  def dataset(self):
    """The workdir's dataset object: its on-device preprocessing and tokenizer (`zoo.export`)."""
    return self._dataset

  @property
  def kind(self) -> str:
    """'image' or 'text'."""
    return self.description['inputs']['kind']

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Images: (height, width, channels) of the training images, which inputs are resized to."""
    return tuple(self.description['inputs']['shape'])

  def preprocess(self, raw) -> np.ndarray:
    """Raw inputs -> model inputs.

    Images: a uint8 array [N, H, W, C], or a list of file paths or PIL images of any size and mode
    (see `read_image`). Texts: a list of str, through the workdir's vocabulary. A single path,
    PIL image or str is taken as a list of one."""
    if self.kind == 'text':
      texts = [raw] if isinstance(raw, str) else list(raw)
      if not all(isinstance(t, str) for t in texts):
        raise ZooError('text models take a list of str; decode bytes first')
      return self._dataset.encode(texts)
    return np.asarray(self._dataset.preprocess_on_device(self._images(raw), None))

  def _images(self, raw) -> np.ndarray:
    shape = self.input_shape
    if isinstance(raw, np.ndarray):
      if raw.dtype != np.uint8 or raw.ndim not in (3, 4):
        raise ZooError(f'image arrays must be uint8 pixels [N, H, W, C] (or [N, H, W]), got {raw.dtype} '
                       f'{list(raw.shape)}; scale floats in [0, 1] by 255 and cast to uint8')
      if raw.shape[1:] == shape:
        return raw
      return images.resize_all(raw if raw.ndim == 4 else raw[..., None], shape)
    if isinstance(raw, (str, Path)) or hasattr(raw, 'convert'):
      raw = [raw]
    arrays = [read_image(source, shape) for source in raw]
    return np.stack(arrays) if arrays else np.zeros((0, *shape), np.uint8)

  def to_nnx(self, rngs=None):
    """The model as a Flax NNX module holding the trained parameters and BatchNorm statistics
    (`to_nnx` below), for NNX code: `module(inputs, train=False)` on preprocessed inputs."""
    sample = self.preprocess([''] if self.kind == 'text' else np.zeros((1, *self.input_shape), np.uint8))
    return to_nnx(self.model, self.variables, sample, rngs)

  @functools.cached_property
  def _logits(self):
    return jax.jit(lambda variables, inputs: self.model.apply(variables, inputs, train=False))

  def predict(self, raw, batch_size: int = 256) -> np.ndarray:
    """Class probabilities, float32 [N, len(class_names)], in jitted batches of `batch_size` (the
    last one padded, so that one compiled program serves every batch)."""
    if batch_size < 1:
      raise ZooError(f'batch_size={batch_size} is not positive; pass 1 or more')
    inputs = self.preprocess(raw)
    batch = min(batch_size, len(inputs)) or 1
    logits = []
    for start in range(0, len(inputs), batch):
      chunk = inputs[start:start + batch]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)]) if len(chunk) < batch else chunk
      logits.append(np.asarray(self._logits(self.variables, padded), np.float32)[:len(chunk)])
    if not logits:
      return np.zeros((0, len(self.class_names)), np.float32)
    return probabilities(np.concatenate(logits))


def to_nnx(model: nn.Module, variables: dict, sample_inputs, rngs=None):
  """A Linen `model` with its `variables` as a Flax NNX module (`flax.nnx.bridge.ToNNX`): calling
  it gives what `model.apply(variables, inputs, train=False)` gives, and its parameters are
  `nnx.Param`s (BatchNorm statistics `nnx.BatchStat`s) that NNX optimizers train."""
  from flax import nnx, traverse_util
  module = nnx.bridge.ToNNX(model, rngs=rngs or nnx.Rngs(0)).lazy_init(sample_inputs, train=False)
  flat = dict(nnx.to_flat_state(nnx.state(module)))
  for tree in variables.values():  # each collection's arrays by path: params and batch_stats
    for path, value in traverse_util.flatten_dict(tree).items():
      flat[path].value = jax.numpy.asarray(value)
  nnx.update(module, nnx.from_flat_state(list(flat.items())))
  return module


def prediction_fields(class_names: Sequence[str], probabilities_row: np.ndarray) -> dict:
  """One input's answer, as `--mode=predict` prints it and the demo server returns it: `label`, the
  class probability (`p_positive`, class 1's, for two classes; else `p`, the top class's) and `top`,
  the 3 likeliest [name, probability] pairs, rounded to 4 places (ties go to the earlier class)."""
  top = np.argsort(-probabilities_row, kind='stable')[:3]
  fields: dict[str, Any] = {'label': class_names[int(top[0])]}
  if len(class_names) == 2:
    fields['p_positive'] = round(float(probabilities_row[1]), 4)
  else:
    fields['p'] = round(float(probabilities_row[top[0]]), 4)
  fields['top'] = [[class_names[int(i)], round(float(probabilities_row[i]), 4)] for i in top]
  return fields


def load(workdir, step: int | None = None) -> TrainedModel:
  """The model trained in `workdir`, restored from checkpoint `step` (default: the newest
  readable one); the workdir alone is enough (no data is read). `workdir` may also be a packed
  model: a shipped model's name (`zoo.list_trained()`), a `.zoo` file or its URL (`zoo.packed`)."""
  workdir = packed.locate(workdir)
  opened = builder.open_workdir(workdir)
  config, description, dataset = opened.config, opened.description, opened.dataset
  model = builder.create_model(config, dataset.model_kwargs())
  step, tree = checkpoints.restore_arrays(workdir, step)
  variables: dict[str, Any] = checkpoints.model_variables(tree)
  log.info('%s step %d: the %s weights', workdir, step, config.weights)
  return TrainedModel(model, variables, config, step, list(description['class_names']), description, dataset)
