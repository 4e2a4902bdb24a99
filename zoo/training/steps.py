"""The data-parallel train and eval steps: a per-device function under `jax.shard_map` over a
`data` mesh axis, combined with `lax.pmean`/`lax.psum` and compiled with `jax.jit`.

This is what `jax.pmap` itself is built on since JAX 0.8, written out: parameters are replicated
(`P()`), batches are global arrays sharded on their leading axis (`P('data')`), and every device of
every process runs the same step on its rows.
"""
import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

AXIS = 'data'


class TrainState(train_state.TrainState):
  batch_stats: Any = flax.core.FrozenDict()  # BatchNorm running statistics; empty for other nets


def data_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (AXIS,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def to_global_batch(local_batch: dict, mesh) -> dict:
  """This process's numpy rows -> one global array per key, sharded over the `data` axis."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def create_train_state(model, tx, sample_inputs, rng, mesh) -> TrainState:
  """Initialises parameters replicated on `mesh`; `sample_inputs` fixes shapes only."""
  def init():
    variables = model.init({'params': rng, 'dropout': rng}, jnp.asarray(sample_inputs), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                             batch_stats=variables.get('batch_stats', flax.core.FrozenDict()))
  return jax.jit(init, out_shardings=replicated(mesh))()


def flops_per_step(compiled) -> float:
  """FLOPs of one compiled step from XLA's cost analysis (a scan body counts once)."""
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  flops = float((analysis or {}).get('flops', 0.0))
  return flops if math.isfinite(flops) else 0.0


@jax.jit
def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def classification_sums(logits, labels, mask, label_smoothing: float = 0.0) -> dict:
  """Masked sums of loss and correct predictions; one logit means binary (sigmoid) classification."""
  if logits.shape[-1] == 1:
    logits = logits[..., 0]
    targets = labels.astype(logits.dtype)
    if label_smoothing:
      targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
    losses = optax.sigmoid_binary_cross_entropy(logits, targets)
    correct = (logits > 0) == (labels > 0)
  else:
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    if label_smoothing:
      targets = optax.smooth_labels(targets, label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
    correct = jnp.argmax(logits, -1) == labels
  return {'loss_sum': jnp.sum(losses * mask), 'correct': jnp.sum(correct * mask), 'count': jnp.sum(mask)}


def zero_metrics(mesh) -> dict:
  """The running sums a train step adds to: replicated float32 scalars."""
  return jax.device_put({k: np.float32(0) for k in ('loss_sum', 'correct', 'count')}, replicated(mesh))


def _train_step(state: TrainState, metrics: dict, batch: dict, rng, *, label_smoothing: float):
  """Runs on one device's rows. Gradients, metrics and BatchNorm statistics are combined across
  the `data` axis, so every device ends the step with the same replicated state. The metric sums
  accumulate here, inside the step, so the host never waits on a step to read them."""
  # One dropout stream per device and step; the step's key comes from the run's seed.
  rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), lax.axis_index(AXIS))
  local_count = batch['mask'].shape[0]

  def loss_fn(params):
    variables = {'params': params}
    mutable = []
    if state.batch_stats:
      variables['batch_stats'] = state.batch_stats
      mutable = ['batch_stats']
    logits, updates = state.apply_fn(variables, batch['inputs'], train=True, rngs={'dropout': rng},
                                     mutable=mutable)
    sums = classification_sums(logits, batch['label'], batch['mask'], label_smoothing)
    return sums['loss_sum'] / local_count, (sums, updates)

  grads, (sums, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
  grads = lax.pmean(grads, AXIS)  # Equal rows per device: the mean of means is the global mean.
  batch_stats = lax.pmean(updates['batch_stats'], AXIS) if state.batch_stats else state.batch_stats
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return new_state, jax.tree.map(jnp.add, metrics, lax.psum(sums, AXIS))


def _eval_step(state: TrainState, batch: dict):
  variables = {'params': state.params}
  if state.batch_stats:
    variables['batch_stats'] = state.batch_stats
  logits = state.apply_fn(variables, batch['inputs'], train=False)
  return lax.psum(classification_sums(logits, batch['label'], batch['mask']), AXIS)


# Both steps run shard_map with check_vma=False, i.e. with pmap's semantics: inside the step every
# value is a per-device value, `jax.grad` returns this device's gradient and the explicit
# `lax.pmean` averages it. (With the checked mode, grad of a replicated input already sums over
# devices, and Flax's recurrent cells, whose initial carry is a replicated zero, fail to trace.)


def make_train_step(mesh, label_smoothing: float = 0.0):
  """(state, metric sums, global batch, rng) -> (state, metric sums); inputs' buffers are donated."""
  per_device = functools.partial(_train_step, label_smoothing=label_smoothing)
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(AXIS), P()), out_specs=(P(), P()),
                          check_vma=False)
  return jax.jit(sharded, donate_argnums=(0, 1))


def make_eval_step(mesh):
  """(state, global batch) -> summed loss, correct predictions and example count."""
  return jax.jit(jax.shard_map(_eval_step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(), check_vma=False))
