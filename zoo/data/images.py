"""Image classification data: uint8 images in memory, scaled to [0, 1] per batch, optional crop+flip.

One dataset class serves every source: a TFDS image classification dataset by name (CIFAR-10,
MNIST, ...; shape, classes and class names from its metadata) or a folder of your own files
(`folders.py`). Both input pipelines are here: `preprocess` (TensorFlow, for tf.data on the host)
and `preprocess_on_device` (jax.numpy, inside the jitted step); given the same noise they compute
the same images (`tests/test_data.py`).

Images from files (folders, predictions) go through Pillow: transparent pixels composited over
white, converted to RGB (or L for one-channel data) and resized with `RESIZE_FILTER`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from zoo.data import tensorflow_import
from zoo.data.pipeline import ArraySplit
from zoo.data.sources import DatasetInfo
from zoo.errors import ZooError

PAD = 4  # Default random-crop padding, in pixels (the standard CIFAR recipe of He et al. 2016).
# How an image of another size becomes the training size: Pillow's bicubic filter, which also
# low-passes (antialiases) when it shrinks, as a photo going down to 32x32 needs.
RESIZE_FILTER = 'bicubic'
FOLDER_IMAGE_SIZE = 32  # folders of your own images: the size the zoo's models were built around


def open_image(source):
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


def to_array(image, shape: Sequence[int]) -> np.ndarray:
  """A PIL image of any size and mode -> uint8 [height, width, channels] in the format `shape`."""
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


def resize_all(images: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """uint8 images [N, H, W, C] (or an object array of images of varying sizes) -> [N, *shape],
  each through `to_array`."""
  from PIL import Image
  if images.dtype != object and images.shape[1:] == tuple(shape):
    return images
  squeeze = lambda image: image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
  resized = [to_array(Image.fromarray(squeeze(np.asarray(image, np.uint8))), shape) for image in images]
  return np.stack(resized) if resized else np.zeros((0, *shape), np.uint8)


class ImageDataset:
  """Images and integer labels of one source, preprocessed for training and evaluation.

  `read_split(split) -> {'image': uint8 [N, H, W, C], 'label': int [N]}`; images of another size
  than `info.image_shape` (the size asked with --image_size) are resized once when loaded.
  """
  kind = 'image'

  def __init__(self, info: DatasetInfo, read_split: Callable[[str], dict], *, augment: bool = False,
               crop_padding: int = PAD, alternating_flip: bool = False, source: str = 'tfds'):
    if info.image_shape is None or None in info.image_shape:
      raise ZooError(f'{info.name} has images of varying sizes ({info.image_shape}); pass --image_size=N to '
                     'resize them all to N x N')
    self.info, self.name, self.source = info, info.name, source
    self.image_shape = tuple(info.image_shape)
    self.class_names = list(info.class_names)
    self._read_split = read_split
    self.crop_padding = crop_padding
    self.noise_per_example = 3 if augment else 0  # crop row, crop column, flip
    self.alternating_noise_columns = (2,) if augment and alternating_flip else ()

  def model_kwargs(self) -> dict:
    return {'num_classes': len(self.class_names)}

  def load(self, split: str) -> ArraySplit:
    arrays = self._read_split(split)
    return ArraySplit(inputs=resize_all(arrays['image'], self.image_shape), labels=arrays['label'].astype('int32'))

  def describe(self) -> dict:
    """What a trained model needs to be used without this code's data: kept in the workdir."""
    return {'dataset': self.name, 'source': self.source, 'class_names': self.class_names,
            'info': self.info.to_json(),
            'inputs': {'kind': 'image', 'shape': list(self.image_shape), 'dtype': 'uint8',
                       'preprocessing': 'float32 pixels = uint8 / 255, in [0, 1]',
                       'from files': f'alpha over white, {"L" if self.image_shape[-1] == 1 else "RGB"}, '
                                     f'Pillow {RESIZE_FILTER} resize to {self.image_shape[1]}x{self.image_shape[0]}'}}

  def preprocess(self, images, noise):
    tf = tensorflow_import.tensorflow()
    if noise is not None:
      images = random_crop_and_flip(images, noise, self.crop_padding)
    return tf.cast(images, tf.float32) / 255.0

  def preprocess_on_device(self, images: jax.Array, noise: jax.Array | None) -> jax.Array:
    if noise is not None:
      images = random_crop_and_flip_on_device(images, noise, self.crop_padding)
    return images.astype(jnp.float32) / 255.0


def random_crop_and_flip(images, noise, pad: int = PAD):
  """Per-example random crop of the reflect-padded image and a coin-flip mirror, vectorised."""
  tf = tensorflow_import.tensorflow()
  height, width = images.shape[1], images.shape[2]
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  offsets = tf.cast(noise[:, :2] * (2 * pad + 1), tf.int32)
  rows = offsets[:, :1] + tf.range(height)[None]
  cols = offsets[:, 1:2] + tf.range(width)[None]
  crops = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
  return tf.where(noise[:, 2, None, None, None] < 0.5, tf.reverse(crops, axis=[2]), crops)


def random_crop_and_flip_on_device(images: jax.Array, noise: jax.Array, pad: int = PAD) -> jax.Array:
  """`random_crop_and_flip` in jax.numpy: the same crops and flips for the same noise."""
  _, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  offsets = (noise[:, :2] * (2 * pad + 1)).astype(jnp.int32)
  crop = lambda image, offset: lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))
  crops = jax.vmap(crop)(padded, offsets)
  return jnp.where(noise[:, 2, None, None, None] < 0.5, crops[:, :, ::-1], crops)
