"""Convolutional networks for 32x32 images (CIFAR-10).

Every module is pure Linen: `model.init(rng, images)`, `model.apply(variables, images, train=False)`
-> logits. Nothing here knows about devices or meshes, so the modules compose with jit, vmap and
grad in anyone's code; a BatchNorm model takes an optional `axis_name`, the mapped axis (shard_map,
vmap) over which a training batch is split, to normalise with the statistics of the whole batch.
"""
import functools
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from zoo.models.contract import setting
from zoo.models.registry import register

# Keras initialises kernels with glorot_uniform and biases with zeros; using the same initialiser
# keeps the seed recipe's training dynamics (and its accuracy) those of the seed.
keras_kernel_init = nn.initializers.xavier_uniform()


def _shifted_slices_conv(lhs, rhs, padding, precision):
  """A stride-1 NHWC/HWIO convolution as one matmul over the kh*kw shifted views of the input."""
  kh, kw, cin, cout = rhs.shape
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), (1, 1), padding)
  lhs = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  n, h, w, _ = lhs.shape
  oh, ow = h - kh + 1, w - kw + 1
  columns = jnp.concatenate([lhs[:, i:i + oh, j:j + ow] for i in range(kh) for j in range(kw)], axis=-1)
  out = jnp.dot(columns.reshape(n * oh * ow, kh * kw * cin), rhs.reshape(kh * kw * cin, cout),
                precision=precision)
  return out.reshape(n, oh, ow, cout)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """`lax.conv_general_dilated`, with plain stride-1 2-D convolutions computed as shifted slices
  and one matmul when running on CPU (`lax.platform_dependent`: other backends keep their conv).

  Why: XLA:CPU's convolution backward is slow, and slices + matmul give the same values and
  gradients (`tests/test_models.py`) in less time (docs/performance.md). Accelerators (cuDNN, TPU
  convs) are better served by lax.
  """
  conv = functools.partial(lax.conv_general_dilated, window_strides=window_strides, padding=padding,
                           lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                           dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                           precision=precision, **kwargs)
  plain = (lhs.ndim == 4 and tuple(window_strides) == (1, 1) and feature_group_count == 1 and not kwargs
           and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
           and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC')))
  if not plain:
    return conv(lhs, rhs)
  return lax.platform_dependent(lhs, rhs, cpu=lambda x, k: _shifted_slices_conv(x, k, padding, precision),
                                default=conv)


# A drop-in for nn.Conv with the conv above: same parameters (names, shapes), same function.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def max_pool_2x2(x):
  """2x2, stride-2, VALID max-pooling written as a reshape and a max.

  The same values as `nn.max_pool(x, (2, 2), strides=(2, 2))` (odd trailing rows/columns dropped,
  as VALID does). Why: XLA:CPU differentiates this far faster than reduce_window's
  select-and-scatter (docs/performance.md).
  """
  n, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@register('simple_cnn')
class SimpleCNN(nn.Module):
  """The seed's Keras CNN, layer for layer: Conv32-pool-Conv64-pool-Conv64-Dense64-Dense10.

  122,570 parameters on CIFAR-10; given the same weights it computes the same logits as the Keras
  model (channels-last flatten order included). Any image size from 18 pixels and any channel
  count: the flattened features grow with the image.
  """
  num_classes: int = 10
  input_kind = 'image'
  min_image_size = 18  # three VALID 3x3 convs and two 2x2 poolings leave at least 1x1

  @nn.compact
  def __call__(self, images, train: bool = False):
    del train  # No dropout or BatchNorm: train and eval are the same function.
    conv = lambda features: Conv(features, (3, 3), padding='VALID', kernel_init=keras_kernel_init)
    x = nn.relu(conv(32)(images))
    x = max_pool_2x2(x)
    x = nn.relu(conv(64)(x))
    x = max_pool_2x2(x)
    x = nn.relu(conv(64)(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(64, kernel_init=keras_kernel_init)(x))
    return nn.Dense(self.num_classes, kernel_init=keras_kernel_init)(x)


class ResidualBlock(nn.Module):
  """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, He et al. 2016."""
  features: int
  strides: int = 1
  axis_name: Optional[str] = None  # BatchNorm's batch statistics are averaged over this mapped axis

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda **kwargs: nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name,
                                         **kwargs)
    conv = lambda strides: Conv(self.features, (3, 3), strides=strides, use_bias=False,
                                   kernel_init=nn.initializers.kaiming_normal())
    y = nn.relu(norm()(conv(self.strides)(x)))
    # Zero-initialised last BN scale: each block starts as the identity (Goyal et al. 2017).
    y = norm(scale_init=nn.initializers.zeros)(conv(1)(y))
    if x.shape != y.shape:
      x = norm()(Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x))
    return nn.relu(x + y)


@register('resnet20')
class ResNet(nn.Module):
  """CIFAR ResNet (He et al. 2016, section 4.2): 6n+2 layers in three stages of widths w, 2w, 4w.

  `ResNet(blocks_per_stage=3)` is ResNet-20 (0.27 M parameters). With `axis_name` (the axis a
  training batch is sharded over, e.g. inside `shard_map`), every BatchNorm normalises with the mean
  and variance of the whole batch, so N devices train as one; `None` (plain `apply`) uses the rows
  it is given. Any image size and channel count (global average pooling at the end).
  """
  num_classes: int = 10
  input_kind = 'image'
  blocks_per_stage: int = setting(3, 'Residual blocks per stage: 3 is ResNet-20, 5 ResNet-32, 9 ResNet-56.')
  widths: tuple[int, ...] = setting((16, 32, 64), 'Widths of the three stages.')
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = Conv(self.widths[0], (3, 3), use_bias=False, kernel_init=nn.initializers.kaiming_normal())(images)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name)(x))
    for stage, width in enumerate(self.widths):
      for block in range(self.blocks_per_stage):
        x = ResidualBlock(width, strides=2 if stage > 0 and block == 0 else 1, axis_name=self.axis_name)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
