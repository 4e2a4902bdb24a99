"""Optimizers and learning-rate schedules, all from optax, chosen by name from the config."""
import jax
import optax

from zoo.errors import ZooError
from zoo.training.config import Config

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'cosine', 'warmup_cosine', 'onecycle', 'triangular')


def create_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
  warmup = max(int(config.warmup_epochs * steps_per_epoch), 1)
  total = max(config.epochs * steps_per_epoch, warmup + 1)  # optax needs some decay after warm-up
  lr = config.learning_rate
  if config.schedule == 'constant':
    return optax.constant_schedule(lr)
  if config.schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, decay_steps=total)
  if config.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=total)
  if config.schedule == 'onecycle':
    return optax.cosine_onecycle_schedule(total, lr)
  if config.schedule == 'triangular':  # airbench: linear from 0.2 lr up to lr, then down to 0
    return optax.join_schedules([optax.linear_schedule(0.2 * lr, lr, warmup),
                                 optax.linear_schedule(lr, 0.0, total - warmup)], [warmup])
  raise ZooError(f'unknown --schedule={config.schedule!r}; choose one of: {", ".join(SCHEDULES)}')


def _decay_mask(params):
  """Decay kernels only: biases and BatchNorm scales/offsets (rank <= 1) are left alone."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _path_mask(params, paths):
  """True for the parameters at 'module/name' paths."""
  def name(path):
    return '/'.join(str(getattr(k, 'key', k)) for k in path)
  return jax.tree_util.tree_map_with_path(lambda path, _: name(path) in paths, params)


def create_optimizer(config: Config, steps_per_epoch: int, frozen=()) -> optax.GradientTransformation:
  """The config's optimizer; parameters at the `frozen` paths ('module/name') never change."""
  opt = _base_optimizer(config, steps_per_epoch)
  if config.bias_lr_multiplier != 1.0:
    opt = optax.chain(opt, optax.masked(optax.scale(config.bias_lr_multiplier),
                                        lambda params: jax.tree.map(lambda p: p.ndim <= 1, params)))
  if frozen:
    opt = optax.chain(opt, optax.masked(optax.set_to_zero(), lambda params: _path_mask(params, frozen)))
  return opt


def _base_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
  schedule = create_schedule(config, steps_per_epoch)
  if config.optimizer == 'adamw':
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=_decay_mask)
  if config.optimizer == 'adam':
    # Keras' Adam uses epsilon 1e-7; matching it keeps the seed recipe the seed's.
    opt = optax.adam(schedule, eps=1e-7)
  elif config.optimizer == 'sgd':
    opt = optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
  else:
    raise ZooError(f'unknown --optimizer={config.optimizer!r}; choose one of: {", ".join(OPTIMIZERS)}')
  if config.weight_decay:  # Coupled L2 for adam and sgd, as in their classic recipes.
    opt = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=_decay_mask), opt)
  return opt
