"""A trained model from its workdir alone: `zoo.load(workdir).predict(images_or_texts)`.

Everything needed is in the workdir: `config.json` (which model, which dataset, how it was built),
`dataset.json` (class names and input format), `vocabulary.txt` (text) and the orbax checkpoints.
No data directory, TFDS download, mesh or device count is needed; the checkpoint is read as host
arrays and the model runs under a plain `jax.jit` on the default device.
"""
import functools
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo import checkpoints
from zoo.data import DESCRIPTION_FILE, images, open_dataset
from zoo.data.sources import DatasetInfo
from zoo.errors import ZooError
from zoo.models import create_model
from zoo.training import config as config_lib

log = logging.getLogger('zoo')


def read_image(source, shape: Sequence[int]) -> np.ndarray:
  """A path or PIL image -> uint8 [height, width, channels] in the training format (alpha over
  white, RGB or L, Pillow's bicubic resize: `zoo.data.images.to_array`)."""
  return images.to_array(images.open_image(source), shape)


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
    """The dataset object that turns raw inputs into model inputs: images' `preprocess_on_device`
    (jax.numpy), texts' `tokenizer()` (the Keras layer over the workdir's vocabulary)."""
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
    return np.asarray(probabilities(np.concatenate(logits)))


def probabilities(logits):
  """One logit (binary, sigmoid) -> [p(class 0), p(class 1)]; several -> softmax. In jax.numpy, so
  that exported models compute the same in their graph (`zoo.export`)."""
  if logits.shape[-1] == 1:
    positive = jax.nn.sigmoid(logits[:, 0])
    return jnp.stack([1 - positive, positive], axis=-1)
  return jax.nn.softmax(logits, axis=-1)


def _description(workdir: Path, config, data_dir) -> dict:
  """`dataset.json`, or for a workdir trained before it was written, the dataset's description from
  TFDS's metadata, with numbered class names where it has no names."""
  path = workdir / DESCRIPTION_FILE
  if path.exists():
    return json.loads(path.read_text())
  description = open_dataset(config, data_dir, workdir).describe()
  names = description['class_names']
  if all(name == str(i) for i, name in enumerate(names)):
    log.warning('%s has no %s and TFDS gives no class names here: classes are numbered 0..%d; pass '
                'data_dir= (--data_dir) holding the prepared %s to name them', workdir, DESCRIPTION_FILE,
                len(names) - 1, config.data_name)
  return description


def load(workdir, step: int | None = None, data_dir: str | None = None) -> TrainedModel:
  """The model trained in `workdir`, restored from checkpoint `step` (default: the newest
  readable one). `data_dir` is only consulted for class names of a workdir that recorded none."""
  workdir = Path(workdir)
  config = config_lib.read_recorded(workdir)
  if config is None:
    raise ZooError(f'{workdir} has no {config_lib.CONFIG_FILE}: it is not a zoo workdir; pass the '
                   'workdir of a training run')
  description = _description(workdir, config, data_dir)
  info = DatasetInfo.from_json(description['info']) if 'info' in description else None
  dataset = open_dataset(config, data_dir, workdir, info=info)
  model = create_model(config.model, config.compute_dtype, config.tta_level, **dataset.model_kwargs())
  if description['inputs']['kind'] == 'text' and not (workdir / description['inputs']['vocabulary']).exists():
    raise ZooError(f'{workdir} has no {description["inputs"]["vocabulary"]}: the vocabulary the model was '
                   'trained with is lost; train again in a new workdir')
  step, tree = checkpoints.restore_arrays(workdir, step)
  variables: dict[str, Any] = {'params': tree['params']}
  if 'batch_stats' in tree:
    variables['batch_stats'] = tree['batch_stats']
  return TrainedModel(model, variables, config, step, list(description['class_names']), description, dataset)
