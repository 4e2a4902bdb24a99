"""Optimizers and learning-rate schedules from optax, chosen by name from the config, and
airbench94_muon's Muon step for convolution filters (`scale_by_muon`, `normalize_filters`)."""
import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from zoo.errors import ZooError
from zoo.config import Config, OPTIMIZERS, SCHEDULES

# airbench94_muon's Newton-Schulz quintic: its coefficients, 3 iterations, and the norm's epsilon.
MUON_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MUON_NS_STEPS = 3
MUON_EPS = 1e-7


def create_schedule(config: Config, steps_per_epoch: int, peak: Optional[float] = None,
                    total_steps: Optional[int] = None) -> optax.Schedule:
  """The config's schedule peaking at `peak` (default --learning_rate) over `total_steps` (default
  the whole run)."""
  warmup = max(int(config.warmup_epochs * steps_per_epoch), 1)
  total = total_steps if total_steps is not None else config.epochs * steps_per_epoch
  total = max(total, warmup + 1)  # optax needs some decay after warm-up
  lr = config.learning_rate if peak is None else peak
  if config.schedule == 'linear':  # airbench94_muon's lr x (1 - step / total), warm-up optional
    if not config.warmup_epochs:
      return optax.linear_schedule(lr, 0.0, total)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 optax.linear_schedule(lr, 0.0, total - warmup)], [warmup])
  if config.schedule == 'constant':
    return optax.constant_schedule(lr)
  if config.schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, decay_steps=total)
  if config.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=total)
  if config.schedule == 'onecycle':
    return optax.cosine_onecycle_schedule(total, lr)
  if config.schedule == 'triangular':  # airbench94's: linear from 0.2 lr up to lr, then to 0.07 lr
    return optax.join_schedules([optax.linear_schedule(0.2 * lr, lr, warmup),
                                 optax.linear_schedule(lr, 0.07 * lr, total - warmup)], [warmup])
  raise ZooError(f'unknown --schedule={config.schedule!r}; choose one of: {", ".join(SCHEDULES)}')


def _decay_mask(config: Config):
  """--weight_decay_scope=kernels leaves biases and BatchNorm scales/offsets (rank <= 1) alone."""
  if config.weight_decay_scope == 'all':
    return None
  return lambda params: jax.tree.map(lambda p: p.ndim > 1, params)


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def _path_mask(params, paths):
  """True for the parameters at 'module/name' paths (the end of the full path, e.g. 'whiten/bias')."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _path_name(path) in paths, params)


def _offsets_of(batchnorm_scopes):
  """A mask: True for the `bias` of every BatchNorm module at `batchnorm_scopes` ('a/b' paths)."""
  def mask(params):
    def is_offset(path, _):
      names = _path_name(path).split('/')
      return names[-1] == 'bias' and '/'.join(names[:-1]) in batchnorm_scopes
    return jax.tree_util.tree_map_with_path(is_offset, params)
  return mask


def _head_of(head: str):
  """A mask: True for the parameters under the classifier head's scope `head` ('a/b')."""
  return lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: _path_name(path).startswith(head + '/'), params)


def _stop_after(num_updates: int, config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
  """Passes the first `num_updates` updates, then zeros: the parameter stops where it is. Under
  --schedule=linear the updates before follow the schedule shortened to `num_updates`, so the
  rate reaches 0 at the stop (airbench94_muon's whitening bias: lr x (1 - step / stop))."""
  if config.schedule != 'linear' or num_updates >= config.epochs * steps_per_epoch:
    return optax.scale_by_schedule(lambda count: (count < num_updates).astype('float32'))
  run, own = create_schedule(config, steps_per_epoch, 1.0), create_schedule(config, steps_per_epoch, 1.0, num_updates)

  def factor(count):
    ratio = own(count) / jnp.where(run(count) > 0, run(count), 1.0)  # the run's rate is applied already
    return jnp.where((count < num_updates) & (run(count) > 0), ratio, 0.0)
  return optax.scale_by_schedule(factor)


class ScaleByMuonState(NamedTuple):
  momentum: optax.Updates  # torch's momentum buffer: momentum x buffer + gradient


def orthogonalize(matrix: jax.Array, steps: int = MUON_NS_STEPS, eps: float = MUON_EPS) -> jax.Array:
  """airbench94_muon's `zeropower_via_newtonschulz5`: the matrix scaled to Frobenius norm 1, then
  `steps` quintic Newton-Schulz iterations towards U V^T (singular values end near, not at, 1)."""
  a, b, c = MUON_NS_COEFFICIENTS
  wide = matrix.T if matrix.shape[0] > matrix.shape[1] else matrix  # the smaller Gram matrix
  x = wide / (jnp.sqrt(jnp.sum(jnp.square(wide))) + eps)
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return x.T if matrix.shape[0] > matrix.shape[1] else x


def _orthogonalize_filter(update: jax.Array) -> jax.Array:
  """A filter (h, w, in, out) as the matrix (h w in, out); torch's (out, in h w) orders the columns
  otherwise, which permutes the result's columns the same way and changes nothing else."""
  return orthogonalize(update.reshape(-1, update.shape[-1])).reshape(update.shape)


def scale_by_muon(momentum: float, nesterov: bool) -> optax.GradientTransformation:
  """Muon's direction as airbench94_muon computes it: torch SGD's momentum buffer (Nesterov: the
  gradient plus momentum x buffer) orthogonalised by `orthogonalize`, in float32 (airbench:
  bfloat16). optax.contrib.scale_by_muon averages with bias correction instead, which changes the
  Nesterov mix of gradient and momentum over the first steps."""
  def init(params):
    return ScaleByMuonState(jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params
    buffer = jax.tree.map(lambda b, g: momentum * b + g, state.momentum, updates)
    direction = jax.tree.map(lambda b, g: g + momentum * b, buffer, updates) if nesterov else buffer
    return jax.tree.map(_orthogonalize_filter, direction), ScaleByMuonState(buffer)
  return optax.GradientTransformation(init, update)


def normalize_filters() -> optax.GradientTransformation:
  """airbench94_muon rescales each filter to Frobenius norm sqrt(out channels) before its step;
  as an update: p (sqrt(out) / |p| - 1) added to the step. Chained last, so nothing scales it."""
  def update(updates, state, params):
    rescale = lambda u, p: u + p * (jnp.sqrt(p.shape[-1]) / jnp.sqrt(jnp.sum(jnp.square(p))) - 1)
    return jax.tree.map(rescale, updates, params), state
  return optax.GradientTransformation(optax.init_empty_state, update)


def muon_labels(frozen=()):
  """'muon' for the 4-D convolution filters that train (not the `frozen` ones, such as airbench's
  whitening kernel), 'sgd' for every other parameter."""
  def labels(params):
    muon = lambda path, p: 'muon' if p.ndim == 4 and _path_name(path) not in frozen else 'sgd'
    return jax.tree_util.tree_map_with_path(muon, params)
  return labels


def create_optimizer(config: Config, steps_per_epoch: int, frozen=(), frozen_after_epochs=(),
                     batchnorm_scopes=frozenset(), head: str = '') -> optax.GradientTransformation:
  """The config's optimizer. Parameters at the `frozen` paths ('module/name') never change; those
  in `frozen_after_epochs` ((path, epochs) pairs) stop after that many epochs (momentum and decay
  included, as torch skips a parameter without gradient). `batchnorm_scopes` are the paths of the
  model's BatchNorm modules (`zoo.models.batchnorm_scopes`), whose offsets get `bias_lr_multiplier`;
  `head` is the classifier head's scope (`zoo.models.head_scope`), which gets `head_lr_multiplier`."""
  opt = _base_optimizer(config, steps_per_epoch, frozen)
  if config.bias_lr_multiplier != 1.0:
    # airbench94's BatchNorm offsets: `bias_lr_multiplier` x the learning rate, the same decay per
    # step as the other weights (torch lr=64 lr, weight_decay=wd/64), i.e. the gradient scaled
    # before decay is added.
    opt = optax.chain(optax.masked(optax.scale(config.bias_lr_multiplier),
                                   _offsets_of(frozenset(batchnorm_scopes))), opt)
  if config.head_lr_multiplier != 1.0:
    if not head:
      raise ValueError('--head_lr_multiplier needs the head\'s scope')
    # airbench94_muon's head group: its own rate, the same decay per step (as the offsets above).
    opt = optax.chain(optax.masked(optax.scale(config.head_lr_multiplier), _head_of(head)), opt)
  if frozen:
    opt = optax.chain(opt, optax.masked(optax.set_to_zero(), lambda params: _path_mask(params, frozen)))
  for path, epochs in frozen_after_epochs:
    stop = _stop_after(int(epochs * steps_per_epoch), config, steps_per_epoch)
    opt = optax.chain(opt, optax.masked(stop, lambda params, path=path: _path_mask(params, (path,))))
  return opt


def _base_optimizer(config: Config, steps_per_epoch: int, frozen=()) -> optax.GradientTransformation:
  if config.optimizer == 'muon':
    # airbench94_muon: Muon for the filters (no decay: they are renormalised), SGD for the rest.
    muon = optax.chain(scale_by_muon(config.muon_momentum, config.nesterov),
                       optax.scale_by_learning_rate(create_schedule(config, steps_per_epoch, config.muon_learning_rate)),
                       normalize_filters())
    sgd = _base_optimizer(dataclasses.replace(config, optimizer='sgd'), steps_per_epoch)
    return optax.multi_transform({'muon': muon, 'sgd': sgd}, muon_labels(frozen))
  schedule = create_schedule(config, steps_per_epoch)
  if config.optimizer == 'adamw':
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=_decay_mask(config))
  if config.optimizer == 'adam':
    # Keras' Adam uses epsilon 1e-7; matching it keeps the seed recipe the seed's.
    opt = optax.adam(schedule, eps=1e-7)
  elif config.optimizer == 'sgd':
    opt = optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
  else:
    raise ZooError(f'unknown --optimizer={config.optimizer!r}; choose one of: {", ".join(OPTIMIZERS)}')
  if config.weight_decay:  # Coupled L2 for adam and sgd, as in their classic recipes.
    opt = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=_decay_mask(config)), opt)
  return opt
