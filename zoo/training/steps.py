"""The data-parallel train and logits steps: a per-device function under `jax.shard_map` over a
`data` mesh axis, combined with `lax.pmean`/`lax.psum` and compiled with `jax.jit`.

This is what `jax.pmap` itself is built on since JAX 0.8, written out: parameters are replicated
(`P()`), batches are global arrays sharded on their leading axis (`P('data')`), and every device of
every process runs the same step on its rows.
"""
import dataclasses
import functools
import math
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from zoo.data import mixing

AXIS = 'data'


class TrainState(train_state.TrainState):
  batch_stats: Any = flax.core.FrozenDict()  # BatchNorm running statistics; empty for other nets
  lookahead: Any = None  # {'params', 'batch_stats'} averaged by `Lookahead`; None without --lookahead
  ema: Any = None  # {'params', 'batch_stats'}: their exponential moving average; None without --ema_decay


def weights(state: TrainState) -> dict:
  """The variables the averages follow: {'params', 'batch_stats'}."""
  return {'params': state.params, 'batch_stats': state.batch_stats}


def averages_restarted(state: TrainState) -> TrainState:
  """`state` with its averages (--lookahead's, --ema_decay's) set to copies of its weights: where a
  run starts, and where a data-dependent initialisation or a fine-tune's copy has changed them."""
  copy = lambda: jax.tree.map(jnp.copy, weights(state))
  return state.replace(lookahead=None if state.lookahead is None else copy(),
                       ema=None if state.ema is None else copy())


def evaluated(state: TrainState) -> TrainState:
  """The state whose weights evaluation uses: the exponential moving average when the run keeps one
  (--ema_decay), else the weights themselves."""
  if state.ema is None:
    return state
  return state.replace(params=state.ema['params'], batch_stats=state.ema['batch_stats'])


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """What a train step does besides the gradient step itself, from the run's config
  (`builder.Program.step_settings`)."""
  label_smoothing: float = 0.0
  lookahead: Optional['Lookahead'] = None
  ema_decay: float = 0.0  # 0: no moving average
  accumulate_steps: int = 1  # micro-batches per optimizer step


@dataclasses.dataclass(frozen=True)
class Lookahead:
  """airbench94's weight averaging: after step `s` (counted from 1), when `s` is a multiple of
  `every` past `start_step`, the average moves to `rho` average + (1 - rho) weights with
  rho = decay**every * (s / total_steps)**3 (the first time it is just the weights), and the weights
  jump to the average; at the end of every epoch the weights jump to it again. BatchNorm statistics
  are averaged with the weights. Its measured effect (seeded ablation on a GPU): docs/airbench.md."""
  start_step: int
  every: int
  decay: float
  total_steps: int
  steps_per_epoch: int

  def __call__(self, state: TrainState) -> TrainState:
    step = state.step
    first = (self.start_step // self.every + 1) * self.every
    sync = (step >= first) & (step % self.every == 0)
    epoch_end = (step >= first) & (step % self.steps_per_epoch == 0)
    rho = self.decay ** self.every * (step.astype(jnp.float32) / self.total_steps) ** 3
    rho = jnp.where(sync, jnp.where(step == first, 0.0, rho), 1.0)  # 1.0: the epoch-end jump only
    weights = {'params': state.params, 'batch_stats': state.batch_stats}
    average = jax.tree.map(lambda a, w: jnp.where(sync, rho * a + (1 - rho) * w, a), state.lookahead, weights)
    weights = jax.tree.map(lambda a, w: jnp.where(sync | epoch_end, a, w), average, weights)
    return state.replace(lookahead=average, **weights)


def data_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (AXIS,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def to_global_batch(local_batch, mesh):
  """This process's numpy rows (an array or a dict of them) -> global arrays sharded over `data`."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def on_axis(model):
  """`model` as the train step runs it: with `axis_name` set on models that have the field, so
  that BatchNorm normalises with the statistics of the global batch and dropout draws each
  example's mask from its global index, and N devices train as one device with the whole batch.

  Only the step's `apply_fn` uses it; the model a user gets, its variables and the checkpoints are
  those of the plain model (an axis name adds no variable)."""
  if 'axis_name' in getattr(model, '__dataclass_fields__', {}):
    return model.clone(axis_name=AXIS)
  return model


def create_train_state(model, tx, sample_inputs, rng, mesh, lookahead: bool = False, ema: bool = False) -> TrainState:
  """Initialises parameters replicated on `mesh`; `sample_inputs` fixes shapes only. The state's
  `apply_fn` runs `model` over the `data` axis (`on_axis`). `lookahead`, `ema`: whether the state
  keeps those averages (starting at the initial weights)."""
  def init():
    variables = model.init({'params': rng, 'dropout': rng}, jnp.asarray(sample_inputs), train=False)
    batch_stats = variables.get('batch_stats', flax.core.FrozenDict())
    average = lambda keep: {'params': variables['params'], 'batch_stats': batch_stats} if keep else None
    return TrainState.create(apply_fn=on_axis(model).apply, params=variables['params'], tx=tx,
                             batch_stats=batch_stats, lookahead=jax.tree.map(jnp.copy, average(lookahead)),
                             ema=jax.tree.map(jnp.copy, average(ema)))
  # The init runs once, so it is compiled without LLVM optimisation: XLA:CPU spends long optimising
  # threefry initialisers for the same values (docs/performance.md).
  lowered = jax.jit(init, out_shardings=replicated(mesh)).lower()
  return lowered.compile(compiler_options={'xla_backend_optimization_level': 0})()


def flops_per_step(lowered) -> float:
  """FLOPs of one step from XLA's cost analysis of the lowered program (a loop body counts once).

  The lowered program, not the compiled one: on GPUs XLA compiles convolutions into cuDNN custom
  calls, which the compiled program's analysis counts as 0 FLOPs (docs/performance.md). On CPU the
  two analyses agree. 0.0 means unknown: some GPU plugins give no analysis of the lowered program."""
  analysis = lowered.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  flops = float((analysis or {}).get('flops', 0.0))
  return flops if math.isfinite(flops) else 0.0


@jax.jit
def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _targets(labels, outputs: int, dtype, label_smoothing: float):
  """Each example's target: a probability of class 1 for one output, else a distribution over classes."""
  if outputs == 1:
    targets = labels.astype(dtype)
    return targets * (1 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else targets
  targets = jax.nn.one_hot(labels, outputs, dtype=dtype)
  return optax.smooth_labels(targets, label_smoothing) if label_smoothing else targets


def classification_sums(logits, labels, mask, label_smoothing: float = 0.0, partner_labels=None,
                        weight=None) -> dict:
  """Masked sums of loss and correct predictions; one logit means binary (sigmoid) classification.
  Mixed examples (`zoo.data.mixing`) give `partner_labels` and `weight`, the share of `labels` in
  the target (the rest is the partner's); a prediction counts as correct for the larger share."""
  outputs = logits.shape[-1]
  targets = _targets(labels, outputs, logits.dtype, label_smoothing)
  if partner_labels is not None:
    share = weight.astype(logits.dtype) if outputs == 1 else weight.astype(logits.dtype)[:, None]
    targets = share * targets + (1 - share) * _targets(partner_labels, outputs, logits.dtype, label_smoothing)
    labels = jnp.where(weight >= 0.5, labels, partner_labels)
  if outputs == 1:
    logits = logits[..., 0]
    losses = optax.sigmoid_binary_cross_entropy(logits, targets)
    correct = (logits > 0) == (labels > 0)
  else:
    losses = optax.softmax_cross_entropy(logits, targets)
    correct = jnp.argmax(logits, -1) == labels
  return {'loss_sum': jnp.sum(losses * mask), 'correct': jnp.sum(correct * mask), 'count': jnp.sum(mask)}


def zero_metrics(mesh) -> dict:
  """The running sums a train step adds to: replicated float32 scalars."""
  return jax.device_put({k: np.float32(0) for k in ('loss_sum', 'correct', 'count')}, replicated(mesh))


def _gradient(state: TrainState, batch_stats, batch: dict, rng, label_smoothing: float):
  """(gradient of the mean loss over this device's rows of `batch`, metric sums, BatchNorm running
  statistics after this forward pass) for the weights of `state` and `batch_stats`."""
  local_count = batch['mask'].shape[0]

  def loss_fn(params):
    variables = {'params': params}
    mutable = []
    if batch_stats:
      variables['batch_stats'] = batch_stats
      mutable = ['batch_stats']
    logits, updates = state.apply_fn(variables, batch['inputs'], train=True, rngs={'dropout': rng},
                                     mutable=mutable)
    sums = classification_sums(logits, batch['label'], batch['mask'], label_smoothing, batch.get('partner_label'),
                               batch.get('weight'))
    return sums['loss_sum'] / local_count, (sums, updates)

  grads, (sums, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
  return grads, sums, updates['batch_stats'] if batch_stats else batch_stats


def micro_batches(batch: dict, count: int) -> dict:
  """This device's rows split into `count` micro-batches [count, rows / count, ...], strided: micro-batch
  k holds local rows k, k + count, k + 2 count, ... Every device holds as many rows, a multiple of
  `count`, so micro-batch k is the global rows i with i % count == k on any device count, and a
  row's place in it, i // count, is its global index there (dropout's, `zoo/models/dropout.py`)."""
  split = lambda x: jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def _accumulated_gradient(state: TrainState, batch: dict, rng, settings: 'StepSettings'):
  """`_gradient` averaged over `settings.accumulate_steps` micro-batches (`micro_batches`), one at a
  time (`lax.scan`), so that only one micro-batch's activations are held. Each micro-batch's forward
  pass normalises with its own BatchNorm statistics and updates the running ones in turn, as a
  PyTorch loop of N backward passes before one optimizer step does; dropout draws from the
  micro-batch's own key."""
  count = settings.accumulate_steps
  micro = micro_batches(batch, count)

  def one(carry, index_and_rows):
    grads, sums, batch_stats = carry
    index, rows = index_and_rows
    g, s, batch_stats = _gradient(state, batch_stats, rows, jax.random.fold_in(rng, index), settings.label_smoothing)
    return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, sums, s), batch_stats), None

  first = jax.tree.map(lambda x: x[0], micro)
  shapes = jax.eval_shape(lambda: _gradient(state, state.batch_stats, first, rng, settings.label_smoothing))
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes[:2])
  (grads, sums, batch_stats), _ = lax.scan(one, (*zeros, state.batch_stats), (jnp.arange(count), micro))
  return jax.tree.map(lambda g: g / count, grads), sums, batch_stats


def _train_step(state: TrainState, metrics: dict, batch: dict, rng, *, settings: StepSettings):
  """Runs on one device's rows. Gradients, metrics and BatchNorm statistics are combined across
  the `data` axis, so every device ends the step with the same replicated state. The metric sums
  accumulate here, inside the step, so the host never waits on a step to read them."""
  # The same key on every device: the run's seed and the step. The models fold in each example's
  # global index (`zoo/models/dropout.py`), so masks do not depend on which device holds a row.
  rng = jax.random.fold_in(rng, state.step)
  if 'mix' in batch:  # --mixup_alpha, --cutmix_alpha: every row carries its partner's image and label
    batch = mixing.mixed_batch(batch)
  if settings.accumulate_steps > 1:
    grads, sums, updated_stats = _accumulated_gradient(state, batch, rng, settings)
  else:
    grads, sums, updated_stats = _gradient(state, state.batch_stats, batch, rng, settings.label_smoothing)
  grads = lax.pmean(grads, AXIS)  # Equal rows per device: the mean of means is the global mean.
  # With `apply_fn` on the `data` axis (`on_axis`), BatchNorm already averaged the batch mean and
  # variance over the devices, so every device computed the same running statistics and this mean
  # changes them by at most a last bit (a sum of N equal values, divided by N). It is kept: it costs one
  # all-reduce of a few KB per step and keeps the state replicated for a model whose BatchNorm is
  # not synchronised (a module without `axis_name`, or the plain model the benchmark compares with).
  batch_stats = lax.pmean(updated_stats, AXIS) if state.batch_stats else state.batch_stats
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if settings.lookahead is not None:
    new_state = settings.lookahead(new_state)
  if settings.ema_decay:
    # The average of what the step leaves (after a lookahead jump too), once per optimizer step.
    new_state = new_state.replace(ema=optax.incremental_update(weights(new_state), new_state.ema,
                                                               1.0 - settings.ema_decay))
  return new_state, jax.tree.map(jnp.add, metrics, lax.psum(sums, AXIS))


def _eval_logits(state: TrainState, inputs):
  """float32 logits of the model in inference mode (BatchNorm's running statistics, no dropout):
  evaluation's loss and accuracy and its report are all computed from them."""
  variables = {'params': state.params}
  if state.batch_stats:
    variables['batch_stats'] = state.batch_stats
  return state.apply_fn(variables, inputs, train=False).astype(jnp.float32)


# Both steps run shard_map with check_vma=False, i.e. with pmap's semantics: inside the step every
# value is a per-device value, `jax.grad` returns this device's gradient and the explicit
# `lax.pmean` averages it. (With the checked mode, grad of a replicated input already sums over
# devices, and Flax's recurrent cells, whose initial carry is a replicated zero, fail to trace.)


def make_train_step(mesh, settings: StepSettings = StepSettings()):
  """(state, metric sums, global batch, rng) -> (state, metric sums); inputs' buffers are donated."""
  per_device = functools.partial(_train_step, settings=settings)
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(AXIS), P()), out_specs=(P(), P()),
                          check_vma=False)
  return jax.jit(sharded, donate_argnums=(0, 1))


def make_train_loop(mesh, preprocess_on_device, settings: StepSettings = StepSettings()):
  """Several train steps per call on a split held on the devices.

  (state, metric sums, inputs, labels, order, noise, first, num_steps, rng[, mixing]) -> (state,
  metric sums): runs global steps `first .. first+num_steps-1` of the epoch plan
  (`pipeline.epoch_plan`; order and noise sharded over `data` on their batch axis; `mixing`, the
  epoch's `zoo.data.mixing.plan`, alike), each device gathering and preprocessing its rows of every
  batch (and their partners) from the replicated `inputs`/`labels`. The same steps as
  `make_train_step` fed the same batches. `num_steps` is traced: one compilation serves every chunk length.
  Why: no host work, no host-to-device transfer and no dispatch per step; tf.data shares the CPU
  cores with the step (what that costs: the benchmark's pipeline-overhead column, docs/performance.md).
  """
  def rows(inputs, labels, indices, noise):
    return preprocess_on_device(inputs[indices], noise if noise.shape[-1] else None), labels[indices]

  def per_device(state, metrics, inputs, labels, order, noise, first, num_steps, rng, mixing_plan):
    def one_step(i, carry):
      images, label = rows(inputs, labels, order[first + i], noise[first + i])
      batch = {'inputs': images, 'label': label, 'mask': jnp.ones(label.shape, jnp.float32)}
      if mixing_plan is not None:
        partner_images, partner_label = rows(inputs, labels, mixing_plan['partner'][first + i],
                                             mixing_plan['partner_noise'][first + i])
        batch.update(partner_inputs=partner_images, partner_label=partner_label, mix=mixing_plan['mix'][first + i])
      return _train_step(*carry, batch, rng, settings=settings)
    return lax.fori_loop(0, num_steps, one_step, (state, metrics))

  plan = P(None, AXIS)
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(), P(), plan, plan, P(), P(), P(), plan),
                          out_specs=(P(), P()), check_vma=False)

  def loop(state, metrics, inputs, labels, order, noise, first, num_steps, rng, mixing_plan=None):
    return sharded(state, metrics, inputs, labels, order, noise, first, num_steps, rng, mixing_plan)
  return jax.jit(loop, donate_argnums=(0, 1))


def make_logits_loop(mesh, preprocess_on_device):
  """(state, inputs, indices) -> the logits of every batch of `pipeline.eval_plan` in one call,
  float32 [batches, global batch, outputs] sharded over `data`: what every evaluation is made of
  (each epoch's loss and accuracy, `--mode=eval`'s and its report)."""
  def per_device(state, inputs, indices):
    return lax.map(lambda rows: _eval_logits(state, preprocess_on_device(inputs[rows], None)), indices)
  plan = P(None, AXIS)
  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), plan), out_specs=plan, check_vma=False))


def make_logits_step(mesh):
  """(state, global inputs) -> float32 logits [global batch, outputs], sharded over `data`: the
  logits loop's computation for a batch that comes from the host."""
  return jax.jit(jax.shard_map(_eval_logits, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS), check_vma=False))


def put_global(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array every process holds in full -> a global array with `sharding`."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

