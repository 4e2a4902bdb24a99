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

import contextlib
import os
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


class ImageTooLarge(ZooError):
  """An image with more pixels than may be decoded, refused from the size in its header."""


# Rows composited at a time (`_over_white`): a band of a 10,000-pixel-wide RGBA image is 10 MB.
BAND_ROWS = 256


def open_image(source, formats: Sequence[str] | None = None, max_pixels: int | None = None):
  """A decoded PIL image from a path, a binary file or a PIL image, upright by its EXIF orientation.

  `formats`: the Pillow formats tried (None: every one Pillow reads; a server takes only the formats
  users upload, so that no other decoder, such as EPS's Ghostscript, sees a stranger's bytes).
  `max_pixels`: an image whose header announces more is refused before a pixel is decoded (Pillow
  reads the size first and the pixels on `load`); Pillow's own limit against decompression bombs
  (twice `Image.MAX_IMAGE_PIXELS`) applies either way. Both raise `ImageTooLarge`; a missing or
  unreadable file raises one clear ZooError, whatever the decoder's exception."""
  from PIL import Image, ImageOps
  if isinstance(source, Image.Image):
    return source
  name = str(source) if isinstance(source, (str, os.PathLike)) else 'the image'
  try:
    with contextlib.ExitStack() as stack:
      file = source if hasattr(source, 'read') else stack.enter_context(open(source, 'rb'))
      image = Image.open(file, formats=formats)
      width, height = image.size
      if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(f'{name} is {width:,} x {height:,} pixels, over the limit of {max_pixels:,}; use a '
                            'smaller image (resize it first)')
      image.load()
      ImageOps.exif_transpose(image, in_place=True)  # photos: upright as the camera meant them, no copy
      return image
  except ZooError:
    raise
  except Image.DecompressionBombError as e:
    raise ImageTooLarge(f'{name} has over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, Pillow\'s limit against '
                        'decompression bombs; use a smaller image (resize it first)') from e
  except Exception as e:  # missing, not an image, truncated, or any failure of a decoder: all say the same
    reason = 'no such file' if isinstance(e, FileNotFoundError) else f'{type(e).__name__}: {e}'
    accepted = ', '.join(formats) if formats else 'PNG, JPEG, GIF, BMP, WebP, TIFF, ...'
    raise ZooError(f'{name}: cannot read it as an image ({reason}); pass a file Pillow opens ({accepted})') from e


def to_array(image, shape: Sequence[int]) -> np.ndarray:
  """A PIL image of any size and mode -> uint8 [height, width, channels] in the format `shape`.
  Beside the image, at most one converted copy of its full size is held (a 40-megapixel RGBA image
  is 160 MB; each further copy would be as large)."""
  from PIL import Image
  height, width, channels = shape
  if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
    image = _over_white(image)
  target = 'L' if channels == 1 else 'RGB'
  if image.mode != target:
    image = image.convert(target)
  if image.size != (width, height):
    image = image.resize((width, height), Image.Resampling.BICUBIC)
  array = np.asarray(image, np.uint8)
  return array[..., None] if channels == 1 else array


def _over_white(image):
  """Transparent pixels composited over white, as RGB: Pillow's `alpha_composite` of each band of
  `BAND_ROWS` rows, so that no full-size RGBA copy (and its composite) is ever made."""
  from PIL import Image
  result = Image.new('RGB', image.size)
  for top in range(0, image.height, BAND_ROWS):
    box = (0, top, image.width, min(top + BAND_ROWS, image.height))
    band = image.crop(box).convert('RGBA')
    white = Image.new('RGBA', band.size, (255, 255, 255, 255))
    result.paste(Image.alpha_composite(white, band).convert('RGB'), box[:2])
  return result


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
