"""An airbench94-style CIFAR-10 network, written as a pure Linen module.

airbench94 (Keller Jordan, 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU"; its
`airbench94.py` is what this follows). What it reaches there and this network here, and in what
time: docs/airbench.md.

The tricks that live in the network, each as in airbench94:
- a frozen 2x2 patch-whitening first layer (`whitening_kernel`: the eigenvectors of the training
  images' 2x2-patch covariance, scaled to unit variance, with their negatives), then GELU;
- three conv groups (conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU) of widths
  64/256/256, convolutions identity-initialised on their first channels (Dirac);
- BatchNorm with frozen unit scales (only the offsets learn), running statistics kept as
  0.6 old + 0.4 new (torch momentum 0.4 = Flax momentum 0.6);
- a final 3x3 max-pool, a bias-free linear layer and a 1/9 output scale;
- test-time augmentation (`tta_level`): 1 averages the logits of the image and its mirror image,
  2 (airbench's default) adds both views of the image shifted one pixel up-left and down-right.
The whitening bias learns for the first 3 epochs only (its `rules`). The tricks of the
recipe (batch 1024, Nesterov SGD on a triangular schedule, 64x learning rate for the BatchNorm
offsets, weight decay on every parameter, label smoothing 0.2, alternating flip + 2-pixel
translation, lookahead averaging of the weights) are flags: `experiments/recipes/cifar_airbench.flags`.
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo.models.cnn import Conv, max_pool_2x2
from zoo.models import tta
from zoo.models.contract import setting
from zoo.models.registry import register

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
  """The 2x2 patch-whitening kernel [2, 2, 3, 24] for normalised images [N, 32, 32, 3].

  As airbench94: the eigenvectors of the patches' uncentred second-moment matrix."""
  images = np.asarray(images, np.float64)
  n, h, w, c = images.shape
  patches = np.stack([images[:, i:h - WHITEN_SIZE + 1 + i, j:w - WHITEN_SIZE + 1 + j]
                      for i in range(WHITEN_SIZE) for j in range(WHITEN_SIZE)], axis=3)
  patches = patches.reshape(-1, WHITEN_SIZE, WHITEN_SIZE, c)  # (i, j, channel) order = HWI
  flat = patches.reshape(len(patches), -1)
  covariance = flat.T @ flat / len(flat)
  eigenvalues, eigenvectors = np.linalg.eigh(covariance)
  filters = eigenvectors / np.sqrt(eigenvalues + eps)  # columns: one whitening filter each
  filters = np.concatenate([filters, -filters], axis=1)
  return filters.reshape(WHITEN_SIZE, WHITEN_SIZE, c, -1).astype(np.float32)


def normalize(images):
  """CIFAR-10's per-channel statistics for RGB; other channel counts (MNIST's one) are centred on
  0.5 and scaled by 4, which the whitening layer that follows rescales anyway."""
  if images.shape[-1] == 3:
    return (images - CIFAR_MEAN) / CIFAR_STD
  return (images - 0.5) / 0.25


class ConvGroup(nn.Module):
  features: int
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None  # BatchNorm's batch statistics are averaged over this mapped axis

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.6, epsilon=1e-12, use_scale=False,
                                dtype=self.dtype, axis_name=self.axis_name)
    conv = lambda: Conv(self.features, (3, 3), padding='SAME', use_bias=False, kernel_init=dirac_init,
                        dtype=self.dtype)
    x = nn.gelu(norm()(max_pool_2x2(conv()(x))), approximate=False)
    return nn.gelu(norm()(conv()(x)), approximate=False)


@register('airbench')
class AirbenchNet(nn.Module):
  input_kind = 'image'  # any channel count
  min_image_size = 9  # the 2x2 whitening conv, then three 2x2 poolings
  num_classes: int = 10
  widths: tuple[int, ...] = setting((64, 256, 256), 'Widths of the three conv groups.')
  output_scale: float = setting(1 / 9, 'Factor on the logits (airbench94: 1/9).')
  tta_level: int = setting(2, 'Test-time augmentation at evaluation: 0 none, 1 mirror, 2 mirror + 1-pixel '
                           'translations (airbench94\'s); --mode=eval may choose another.', role='eval')
  dtype: str = setting('float32', 'float32 | bfloat16: activations and conv inputs (airbench94 runs in float16); '
                       'parameters, BatchNorm statistics and logits stay float32. Fast on GPUs/TPUs, slow on most '
                       'CPUs.')
  # The mapped axis a training batch is sharded over (e.g. in shard_map): BatchNorm then uses the
  # whole batch's statistics, so N devices train as one. None: the rows `apply` is given.
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, images, train: bool = False):
    if self.dtype not in ('float32', 'bfloat16'):
      raise ValueError(f'dtype={self.dtype!r}: choose float32 or bfloat16')
    tta.check_level(self.tta_level, 'airbench')
    dtype = jnp.dtype(self.dtype)
    whiten = Conv(2 * WHITEN_SIZE ** 2 * images.shape[-1], (WHITEN_SIZE, WHITEN_SIZE), padding='VALID',
                  name='whiten', dtype=dtype)
    convs = [ConvGroup(width, dtype, self.axis_name) for width in self.widths]
    # torch.nn.Linear's default init (uniform, bound 1/sqrt(fan_in)), as airbench94 has it.
    head = nn.Dense(self.num_classes, use_bias=False, dtype=dtype,
                    kernel_init=nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform'))

    def logits(x):
      x = nn.gelu(whiten(normalize(x)), approximate=False)
      for group in convs:
        x = group(x, train)
      x = jnp.max(x, axis=(1, 2))  # the final 3x3 max-pool over what is left
      return head(x).astype(jnp.float32) * self.output_scale

    # airbench94's test-time augmentation (its measured effect: docs/airbench.md).
    return tta.averaged_logits(logits, images, 0 if train else self.tta_level)

  @staticmethod
  def init_from_data(params, images: np.ndarray, labels=None):
    """Sets the frozen whitening layer from training images in [0, 1] (the first
    `init_examples`, as airbench94 has it); the labels are not needed."""
    del labels
    kernel = whitening_kernel(normalize(np.asarray(images, np.float32)))
    whiten = dict(params['whiten'], kernel=jnp.asarray(kernel))
    return dict(params, whiten=whiten)

  # The whitening kernel never trains; its bias learns for the first 3 epochs (zoo/rules.py).
  rules = ('whiten/kernel:frozen', 'whiten/bias:stop_after_epochs=3')
  init_examples = 5000  # the training images init_from_data sees
