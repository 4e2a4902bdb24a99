"""An airbench94-style CIFAR-10 network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single
GPU", 2024), written as a pure Linen module.

The tricks that live in the network, each as in airbench94:
- a frozen 2x2 patch-whitening first layer (`whitening_kernel`: the eigenvectors of the training
  images' 2x2-patch covariance, scaled to unit variance, with their negatives), then GELU;
- three conv groups (conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU) of widths
  64/256/256, convolutions identity-initialised on their first channels (Dirac);
- BatchNorm with frozen unit scales (only the offsets learn), momentum 0.6 (Flax: 0.4 of the old);
- a final 3x3 max-pool, a bias-free linear layer and a 1/9 output scale;
- test-time augmentation: at eval the logits of the image and its mirror image are averaged.
The tricks of the recipe (batch 1024, Nesterov SGD with a triangular schedule, 64x learning rate for
the BatchNorm offsets, label smoothing 0.2, flip + 2-pixel translation) are flags:
`experiments/recipes/cifar_airbench.flags`.
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.models.cnn import Conv, max_pool_2x2

CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
WHITEN_SIZE = 2  # 2x2 patches: 12 dimensions, 24 output channels (each eigenvector and its negative)


def dirac_init(key, shape, dtype=jnp.float32):
  """Kaiming-uniform-like noise, with the first min(in, out) channels passing their input through."""
  kh, kw, cin, cout = shape
  bound = 1 / np.sqrt(kh * kw * cin)
  kernel = jax.random.uniform(key, shape, dtype, -bound, bound)
  n = min(cin, cout)
  identity = jnp.zeros((kh, kw, n, n), dtype).at[kh // 2, kw // 2].set(jnp.eye(n, dtype=dtype))
  return kernel.at[:, :, :n, :n].set(identity)


def whitening_kernel(images: np.ndarray, eps: float = 5e-4) -> np.ndarray:
  """The 2x2 patch-whitening kernel [2, 2, 3, 24] for normalised images [N, 32, 32, 3]."""
  images = np.asarray(images, np.float64)
  n, h, w, c = images.shape
  patches = np.stack([images[:, i:h - WHITEN_SIZE + 1 + i, j:w - WHITEN_SIZE + 1 + j]
                      for i in range(WHITEN_SIZE) for j in range(WHITEN_SIZE)], axis=3)
  patches = patches.reshape(-1, WHITEN_SIZE, WHITEN_SIZE, c)  # (i, j, channel) order = HWI
  flat = patches.reshape(len(patches), -1)
  covariance = np.cov(flat, rowvar=False)
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)
  filters = eigenvectors / np.sqrt(eigenvalues + eps)  # columns: one whitening filter each
  filters = np.concatenate([filters, -filters], axis=1)
  return filters.reshape(WHITEN_SIZE, WHITEN_SIZE, c, -1).astype(np.float32)


def normalize(images):
  return (images - CIFAR_MEAN) / CIFAR_STD


class ConvGroup(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.4, epsilon=1e-12, use_scale=False)
    conv = lambda: Conv(self.features, (3, 3), padding='SAME', use_bias=False, kernel_init=dirac_init)
    x = nn.gelu(norm()(max_pool_2x2(conv()(x))), approximate=False)
    return nn.gelu(norm()(conv()(x)), approximate=False)


class AirbenchNet(nn.Module):
  num_classes: int = 10
  widths: Sequence[int] = (64, 256, 256)
  output_scale: float = 1 / 9
  mirror_at_eval: bool = True  # test-time augmentation

  @nn.compact
  def __call__(self, images, train: bool = False):
    whiten = Conv(2 * WHITEN_SIZE ** 2 * images.shape[-1], (WHITEN_SIZE, WHITEN_SIZE), padding='VALID',
                  name='whiten')
    convs = [ConvGroup(width) for width in self.widths]
    head = nn.Dense(self.num_classes, use_bias=False)

    def logits(x):
      x = nn.gelu(whiten(normalize(x)), approximate=False)
      for group in convs:
        x = group(x, train)
      x = jnp.max(x, axis=(1, 2))  # the final 3x3 max-pool over what is left
      return head(x) * self.output_scale

    if train or not self.mirror_at_eval:
      return logits(images)
    return (logits(images) + logits(images[:, :, ::-1])) / 2

  @staticmethod
  def init_from_data(params, images: np.ndarray):
    """Sets the frozen whitening layer from training images in [0, 1] (airbench uses 5,000)."""
    kernel = whitening_kernel(normalize(np.asarray(images, np.float32)))
    whiten = dict(params['whiten'], kernel=jnp.asarray(kernel))
    return dict(params, whiten=whiten)

  # Parameters no optimizer may change (`optimizers.py` freezes them).
  frozen = ('whiten/kernel',)
