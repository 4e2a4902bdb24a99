"""Recurrent text classifiers over token ids (0 = padding, post-padded; 1 = out of vocabulary).

Both read sequence lengths from the padding and pass them to `nn.RNN`, so the state after a
review's last token is the one used and a prediction does not change with the padding after it.
One logit out: trained with sigmoid cross-entropy, p(positive) = sigmoid(logit).
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from zoo.models.contract import setting
from zoo.models.registry import register
from zoo.models.dropout import ExampleDropout

PAD_ID = 0


def sequence_lengths(tokens):
  return jnp.sum(tokens != PAD_ID, axis=-1)


@register('lstm')
class LSTMClassifier(nn.Module):
  """The seed's network: Embedding(vocab, 16) -> LSTM(32) -> Dense(1)."""
  vocab_size: int
  num_classes: int = 1
  input_kind = 'text'
  embed_dim: int = setting(16, 'Width of the token embedding.')
  hidden_size: int = setting(32, 'Width of the LSTM state.')

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    del train
    x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
    (_, final_hidden), _ = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size), return_carry=True)(
        x, seq_lengths=sequence_lengths(tokens))
    return nn.Dense(self.num_classes)(final_hidden)


@register('bilstm')
class BiLSTMClassifier(nn.Module):
  """Embedding -> dropout -> bidirectional LSTM -> masked mean+max pooling over time -> Dense(1).

  Pooling over every position lets the whole review vote instead of the last state alone; the
  mask keeps padding out of both pools.
  """
  vocab_size: int
  num_classes: int = 1
  input_kind = 'text'
  embed_dim: int = setting(128, 'Width of the token embedding.')
  hidden_size: int = setting(64, 'Width of each direction\'s LSTM state.')
  dropout_rate: float = setting(0.4, 'Dropout on the embeddings and on the pooled features.')
  # The mapped axis a batch is sharded over, if any: dropout masks follow the global example index
  # (`dropout.py`), so the same batch trains alike on any number of devices.
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    lengths = sequence_lengths(tokens)
    mask = (tokens != PAD_ID)[..., None]
    x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
    dropout = lambda: ExampleDropout(self.dropout_rate, deterministic=not train, axis_name=self.axis_name)
    x = dropout()(x)
    y = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(self.hidden_size)),
                         nn.RNN(nn.OptimizedLSTMCell(self.hidden_size)))(x, seq_lengths=lengths)
    mean = jnp.sum(y * mask, axis=1) / jnp.maximum(lengths, 1)[:, None]
    maximum = jnp.where(jnp.any(mask, axis=1), jnp.max(jnp.where(mask, y, -jnp.inf), axis=1), 0.0)
    z = dropout()(jnp.concatenate([mean, maximum], -1))
    return nn.Dense(self.num_classes)(z)
