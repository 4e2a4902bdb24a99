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
import numpy as np

from zoo import checkpoints
from zoo.data import DESCRIPTION_FILE, open_dataset
from zoo.errors import ZooError
from zoo.models import create_model
from zoo.training import config as config_lib

log = logging.getLogger('zoo')

# How an image of another size becomes the training size: Pillow's bicubic filter, which also
# low-passes (antialiases) when it shrinks, as a photo going down to 32x32 needs.
RESIZE_FILTER = 'bicubic'


def _image_from(source):
  """A PIL image from a path or a PIL image; one clear error for a missing or unreadable file."""
  from PIL import Image, ImageOps
  if isinstance(source, Image.Image):
    return source
  try:
    with Image.open(source) as image:
      image.load()
      return ImageOps.exif_transpose(image)  # photos: upright as the camera meant them
  except (OSError, ValueError) as e:  # missing file, not an image, truncated: all say the same
    reason = 'no such file' if isinstance(e, FileNotFoundError) else f'{type(e).__name__}: {e}'
    raise ZooError(f'{source}: cannot read it as an image ({reason}); pass a file Pillow opens '
                   '(PNG, JPEG, GIF, BMP, WebP, TIFF, ...)') from e


def image_to_array(image, shape: Sequence[int]) -> np.ndarray:
  """A PIL image of any size and mode -> uint8 [height, width, channels] of the training format.

  Transparent pixels (RGBA, LA, palette with transparency) are composited over white, as a viewer
  shows them; then the image is converted to RGB (or L for one channel) and resized with
  `RESIZE_FILTER` when its size differs."""
  from PIL import Image
  height, width, channels = shape
  if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
    image = image.convert('RGBA')
    image = Image.alpha_composite(Image.new('RGBA', image.size, (255, 255, 255, 255)), image)
  image = image.convert('L' if channels == 1 else 'RGB')
  if image.size != (width, height):
    image = image.resize((width, height), Image.Resampling.BICUBIC)
  array = np.asarray(image, np.uint8)
  return array[..., None] if channels == 1 else array


def read_image(source, shape: Sequence[int]) -> np.ndarray:
  """A path or PIL image -> uint8 [height, width, channels] in the training format."""
  return image_to_array(_image_from(source), shape)


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
    (see `image_to_array`). Texts: a list of str, through the workdir's vocabulary. A single path,
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
      from PIL import Image
      raw = [Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
             for image in raw]
    elif isinstance(raw, (str, Path)) or hasattr(raw, 'convert'):
      raw = [raw]
    images = [read_image(source, shape) for source in raw]
    return np.stack(images) if images else np.zeros((0, *shape), np.uint8)

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


def probabilities(logits: np.ndarray) -> np.ndarray:
  """One logit (binary, sigmoid) -> [p(class 0), p(class 1)]; several -> softmax."""
  if logits.shape[-1] == 1:
    positive = np.asarray(jax.nn.sigmoid(logits[:, 0]))
    return np.stack([1 - positive, positive], axis=-1)
  return np.asarray(jax.nn.softmax(logits, axis=-1))


def _description(workdir: Path, dataset, num_classes: int) -> dict:
  """`dataset.json`, or for a workdir trained before it was written, the dataset's own description
  with class names from TFDS's metadata where they are there, else numbered."""
  path = workdir / DESCRIPTION_FILE
  if path.exists():
    return json.loads(path.read_text())
  description = dataset.describe()
  names = description.get('class_names')
  if not names or all(name == str(i) for i, name in enumerate(names)):
    description['class_names'] = [str(i) for i in range(num_classes)]
    log.warning('%s has no %s and TFDS gives no class names here: classes are numbered 0..%d; pass '
                'data_dir= (--data_dir) holding the prepared %s to name them', workdir, DESCRIPTION_FILE,
                num_classes - 1, dataset.name)
  return description


def load(workdir, step: int | None = None, data_dir: str | None = None) -> TrainedModel:
  """The model trained in `workdir`, restored from checkpoint `step` (default: the newest
  readable one). `data_dir` is only consulted for class names of a workdir that recorded none."""
  workdir = Path(workdir)
  config = config_lib.read_recorded(workdir)
  if config is None:
    raise ZooError(f'{workdir} has no {config_lib.CONFIG_FILE}: it is not a zoo workdir; pass the '
                   'workdir of a training run')
  dataset = open_dataset(config, data_dir, workdir)
  kwargs = dataset.model_kwargs()
  model = create_model(config.model, config.compute_dtype, config.tta_level, **kwargs)
  description = _description(workdir, dataset, max(kwargs['num_classes'], 2))
  if description['inputs']['kind'] == 'text' and not (workdir / description['inputs']['vocabulary']).exists():
    raise ZooError(f'{workdir} has no {description["inputs"]["vocabulary"]}: the vocabulary the model was '
                   'trained with is lost; train again in a new workdir')
  step, tree = checkpoints.restore_arrays(workdir, step)
  variables: dict[str, Any] = {'params': tree['params']}
  if 'batch_stats' in tree:
    variables['batch_stats'] = tree['batch_stats']
  return TrainedModel(model, variables, config, step, list(description['class_names']), description, dataset)
