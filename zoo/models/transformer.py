"""A Transformer encoder text classifier over token ids (0 = padding, post-padded; 1 = out of
vocabulary), with the encoder blocks of the Vision Transformer (`vit.py`, pre-LayerNorm).

Padding takes no part: an attention mask from `tokens != 0` keeps every token from looking at
padding, and the pooled vector is the mean over the real tokens only, so appending padding does
not change the prediction (the positions of the real tokens do not move, as padding comes after
them). One logit out for two classes (sigmoid cross-entropy), as the LSTM classifiers.
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from zoo.errors import ZooError
from zoo.models.contract import setting
from zoo.models.dropout import ExampleDropout
from zoo.models.registry import register
from zoo.models.vit import Encoder, _check_heads

PAD_ID = 0


@register('transformer')
class TransformerClassifier(nn.Module):
  """Token + position embeddings -> dropout -> encoder (padding masked) -> masked mean -> dropout
  -> linear head."""
  vocab_size: int
  num_classes: int = 1
  input_kind = 'text'
  rules = (r'(.*/)?pos_embedding:decay=0',)
  embed_dim: int = setting(128, 'Width of the token and position embeddings and of the encoder.')
  depth: int = setting(2, 'Number of encoder blocks.')
  num_heads: int = setting(4, 'Attention heads per block; must divide --model.embed_dim.')
  mlp_dim: int = setting(256, 'Hidden width of each block\'s MLP.')
  dropout: float = setting(0.1, 'Dropout on the embeddings, in the blocks and on the pooled vector.')
  max_length: int = setting(512, 'Rows of the position table: the longest input (--max_length) it takes.')
  axis_name: Optional[str] = None  # dropout masks follow the global example index (`dropout.py`)

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    _check_heads(self.embed_dim, self.num_heads, 'embed_dim')
    n, length = tokens.shape
    if length > self.max_length:
      raise ZooError(f'inputs of {length} tokens are longer than the position table '
                     f'(--model.max_length={self.max_length}); pass --model.max_length={length} or more')
    keep = tokens != PAD_ID
    x = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=nn.initializers.normal(stddev=0.02))(tokens)
    positions = self.param('pos_embedding', nn.initializers.normal(stddev=0.02), (1, self.max_length, self.embed_dim))
    x = x + positions[:, :length]
    dropout = lambda: ExampleDropout(self.dropout, deterministic=not train, axis_name=self.axis_name)
    x = dropout()(x)
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout, self.axis_name, name='Transformer')(
        x, train, nn.make_attention_mask(keep, keep))
    weights = keep[..., None].astype(x.dtype)
    pooled = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    return nn.Dense(self.num_classes, name='head')(dropout()(pooled))
