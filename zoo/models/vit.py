"""A Vision Transformer as big_vision writes it (`big_vision/models/vit.py`; Dosovitskiy et al.
2021, "An Image is Worth 16x16 Words").

The image becomes a grid of tokens, a learned position embedding is added, pre-LayerNorm encoder
blocks (multi-head self-attention, then an MLP, each around a residual) mix them, a final
LayerNorm closes the encoder, and the tokens are pooled (their mean, `pool='gap'`, or a class token
prepended to them, `pool='token'`) into a linear head initialised at zero, as big_vision's.

Tokens come from one of two tokenizers:
- `patch`: big_vision's, a `patch_size` x `patch_size` convolution of stride `patch_size`, i.e.
  one linear map per non-overlapping patch;
- `conv`: as in Compact Convolutional Transformers (Hassani et al. 2021, "Escaping the Big Data
  Paradigm with Compact Transformers"): log2(`patch_size`) blocks of 3x3 convolution, ReLU and 2x2
  max-pooling, so the token grid is the same as the patch tokenizer's. Why: a plain ViT has no
  notion of locality and needs far more images than CIFAR-10's 50,000 to learn it; convolutions
  give it for free, which is what lets a small transformer train well on small data.

Dropout is `ExampleDropout` (masks from the global example index, so training does not depend on
the device count); the attention weights themselves are not dropped, since
`nn.MultiHeadDotProductAttention` draws its masks per device.
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from zoo.errors import ZooError
from zoo.models.cnn import Conv, max_pool_2x2
from zoo.models import tta
from zoo.models.contract import setting
from zoo.models.dropout import ExampleDropout
from zoo.models.registry import register

POOLS = ('gap', 'token')
TOKENIZERS = ('patch', 'conv')


class MlpBlock(nn.Module):
  """Dense(mlp_dim) -> GELU -> dropout -> Dense(back to the input width), big_vision's init."""
  mlp_dim: int
  dropout: float = 0.0
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool):
    width = x.shape[-1]
    dense = lambda features: nn.Dense(features, kernel_init=nn.initializers.xavier_uniform(),
                                      bias_init=nn.initializers.normal(stddev=1e-6))
    x = nn.gelu(dense(self.mlp_dim)(x))
    x = ExampleDropout(self.dropout, deterministic=not train, axis_name=self.axis_name)(x)
    return dense(width)(x)


class EncoderBlock(nn.Module):
  """x + attention(LayerNorm(x)), then y + MLP(LayerNorm(y)): the pre-LayerNorm block.

  `mask` ([N, 1, L, L], True where a query may look at a key) keeps padding out of attention."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    dropout = lambda: ExampleDropout(self.dropout, deterministic=not train, axis_name=self.axis_name)
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
                                        deterministic=True)(y, y, mask=mask)
    x = x + dropout()(y)
    y = nn.LayerNorm()(x)
    y = MlpBlock(self.mlp_dim, self.dropout, self.axis_name)(y, train)
    return x + dropout()(y)


class Encoder(nn.Module):
  """`depth` encoder blocks and the final LayerNorm."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, self.axis_name, name=f'encoderblock_{i}')(
          x, train, mask)
    return nn.LayerNorm(name='encoder_norm')(x)


def _check_heads(width: int, num_heads: int, flag: str) -> None:
  if num_heads < 1 or width % num_heads:
    raise ZooError(f'--model.num_heads={num_heads} does not divide --model.{flag}={width}; pass a number of '
                   f'heads that divides it')


@register('vit')
class ViT(nn.Module):
  """Tokenizer -> + position embedding -> dropout -> encoder -> pool -> linear head."""
  num_classes: int = 10
  input_kind = 'image'
  # The position embedding and the class token are not decayed (as big_vision's recipes leave them).
  rules = (r'(.*/)?(pos_embedding|cls):decay=0',)
  patch_size: int = setting(4, 'Side of the square patch each token covers; it must divide the image '
                               'size (a power of 2 with --model.tokenizer=conv).')
  width: int = setting(192, 'Width of the tokens.')
  depth: int = setting(6, 'Number of encoder blocks.')
  num_heads: int = setting(3, 'Attention heads per block; must divide --model.width.')
  mlp_dim: int = setting(384, 'Hidden width of each block\'s MLP.')
  pool: str = setting('gap', 'How tokens become one vector: gap (their mean) or token (a class token).')
  dropout: float = setting(0.0, 'Dropout after the position embedding, in the MLPs and on each residual branch.')
  tokenizer: str = setting('patch', 'patch (one linear map per patch, as ViT) or conv (3x3 conv + ReLU + 2x2 '
                                    'max-pool blocks, as Compact Convolutional Transformers).')
  tta_level: int = setting(0, 'Test-time augmentation at evaluation: 0 none, 1 mirror, 2 mirror + 1-pixel '
                               'translations (zoo/models/tta.py); --mode=eval may choose another.', role='eval')
  axis_name: Optional[str] = None  # dropout masks follow the global example index (`dropout.py`)

  def _check(self, images) -> None:
    tta.check_level(self.tta_level, 'vit')
    if self.pool not in POOLS:
      raise ZooError(f'--model.pool={self.pool!r} is unknown; choose one of: {", ".join(POOLS)}')
    if self.tokenizer not in TOKENIZERS:
      raise ZooError(f'--model.tokenizer={self.tokenizer!r} is unknown; choose one of: {", ".join(TOKENIZERS)}')
    _check_heads(self.width, self.num_heads, 'width')
    _, h, w, _ = images.shape
    p = self.patch_size
    if p < 1 or h % p or w % p:
      divisors = [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]
      raise ZooError(f'--model.patch_size={p} does not divide the {w}x{h} images; pass one of '
                     f'{", ".join(map(str, divisors))}, or an --image_size it divides')
    if self.tokenizer == 'conv' and p & (p - 1):
      raise ZooError(f'--model.patch_size={p} is not a power of 2, as --model.tokenizer=conv halves the image '
                     'per block; pass 2, 4 or 8')

  def tokens(self, images):
    """[N, H, W, C] images -> [N, H/p * W/p, width] tokens."""
    x = (images - 0.5) / 0.25
    if self.tokenizer == 'patch':
      x = nn.Conv(self.width, (self.patch_size,) * 2, strides=(self.patch_size,) * 2, padding='VALID',
                  name='embedding')(x)
    else:
      blocks = self.patch_size.bit_length() - 1
      for i in range(blocks):  # widths double up to `width` in the last block
        x = Conv(max(self.width >> (blocks - 1 - i), 1), (3, 3), padding='SAME', use_bias=False,
                 name=f'tokenizer_{i}')(x)
        x = max_pool_2x2(nn.relu(x))
      if not blocks:  # patch_size 1: one token per pixel
        x = nn.Dense(self.width, name='embedding')(x)
    n, h, w, c = x.shape
    return x.reshape(n, h * w, c)

  def __call__(self, images, train: bool = False):
    self._check(images)
    # Test-time augmentation: each view through the same layers (zoo/models/tta.py; docs/models.md).
    return tta.averaged_logits(lambda x: self.logits(x, train), images, 0 if train else self.tta_level)

  @nn.compact
  def logits(self, images, train: bool):
    x = self.tokens(images)
    n, length, width = x.shape
    x = x + self.param('pos_embedding', nn.initializers.normal(stddev=1 / width ** 0.5), (1, length, width))
    if self.pool == 'token':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, width))
      x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, width)), x], axis=1)
    x = ExampleDropout(self.dropout, deterministic=not train, axis_name=self.axis_name)(x)
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout, self.axis_name, name='Transformer')(x, train)
    x = x[:, 0] if self.pool == 'token' else jnp.mean(x, axis=1)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name='head')(x)
