"""CIFAR-10 from TFDS: uint8 images in memory, scaled to [0, 1] per batch, optional crop+flip.

Both input pipelines are here: `preprocess` (TensorFlow, for tf.data on the host) and
`preprocess_on_device` (jax.numpy, inside the jitted step); given the same noise they compute the
same images (`tests/test_data.py`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from zoo.data import sources, tensorflow_import
from zoo.data.pipeline import ArraySplit
from zoo.training.config import Config

PAD = 4  # Default random-crop padding, in pixels (the standard CIFAR recipe of He et al. 2016).


class Cifar10:
  name = 'cifar10'
  image_shape = (32, 32, 3)  # height, width, channels of the stored uint8 images

  def __init__(self, config: Config, data_dir: str | None, workdir=None):
    del workdir  # Nothing is learned from the data: no vocabulary to keep.
    self.config = config
    self.data_dir = data_dir
    self.noise_per_example = 3 if config.augment else 0  # crop row, crop column, flip
    self.alternating_noise_columns = (2,) if config.augment and config.alternating_flip else ()

  def model_kwargs(self) -> dict:
    return {'num_classes': 10}

  def load(self, split: str) -> ArraySplit:
    arrays = sources.load_split(self.name, split, self.data_dir, self.config.split_cache)
    return ArraySplit(inputs=arrays['image'], labels=arrays['label'].astype('int32'))

  def describe(self) -> dict:
    """What a trained model needs to be used without this code's data: kept in the workdir."""
    return {'dataset': self.name, 'class_names': sources.class_names(self.name, self.data_dir),
            'inputs': {'kind': 'image', 'shape': list(self.image_shape), 'dtype': 'uint8',
                       'preprocessing': 'float32 pixels = uint8 / 255, in [0, 1]'}}

  def preprocess(self, images: tf.Tensor, noise: tf.Tensor | None) -> tf.Tensor:
    tf = tensorflow_import.tensorflow()
    if noise is not None:
      images = random_crop_and_flip(images, noise, self.config.crop_padding)
    return tf.cast(images, tf.float32) / 255.0

  def preprocess_on_device(self, images: jax.Array, noise: jax.Array | None) -> jax.Array:
    if noise is not None:
      images = random_crop_and_flip_on_device(images, noise, self.config.crop_padding)
    return images.astype(jnp.float32) / 255.0


def random_crop_and_flip(images: tf.Tensor, noise: tf.Tensor, pad: int = PAD) -> tf.Tensor:
  """Per-example random 32x32 crop of the reflect-padded image and a coin-flip mirror, vectorised."""
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
