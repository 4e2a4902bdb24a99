"""Dropout whose mask depends on the example, not on the device that holds it.

`nn.Dropout` draws one mask for the array it is given, so the same global batch split over N
devices (each drawing for its own rows) gets other masks than on one device, and training depends
on the device count. `ExampleDropout` draws each row's mask from its own key,
`fold_in(key, global row)`: with the same 'dropout' key on every device, the masks are a function
of (key, global example index) alone.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def global_rows(num_rows: int, axis_name: Optional[str] = None) -> jax.Array:
  """The global batch indices of this device's `num_rows` rows.

  Under `axis_name` (a `shard_map`/`vmap` axis over which a global batch is sharded on its leading
  axis, every position holding `num_rows` rows) position i holds rows [i * num_rows, (i + 1) *
  num_rows); outside any mapped axis (`axis_name=None`) the rows are the whole batch."""
  first = lax.axis_index(axis_name) * num_rows if axis_name is not None else 0
  return first + jnp.arange(num_rows)


class ExampleDropout(nn.Module):
  """`nn.Dropout` (same rate, scaling and `deterministic` semantics) with one key per row.

  The leading axis of the input is the batch. Row r's mask is drawn from
  `fold_in(make_rng('dropout'), r)`, r counted over the global batch when `axis_name` names the
  axis the batch is sharded over (see `global_rows`). No parameters: swapping it for nn.Dropout
  leaves a model's variables unchanged."""
  rate: float
  deterministic: Optional[bool] = None
  axis_name: Optional[str] = None
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, inputs, deterministic: Optional[bool] = None):
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    if deterministic or self.rate == 0.0:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    key = self.make_rng(self.rng_collection)
    keys = jax.vmap(lambda row: jax.random.fold_in(key, row))(global_rows(inputs.shape[0], self.axis_name))
    keep_prob = 1.0 - self.rate
    keep = jax.vmap(lambda k: jax.random.bernoulli(k, keep_prob, inputs.shape[1:]))(keys)
    return lax.select(keep, inputs / keep_prob, jnp.zeros_like(inputs))
